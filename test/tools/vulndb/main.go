// Command vulndb cuts a snapshot of the Go vulnerability database down to
// the entries that can concern pkirenewd: the standard library, the
// toolchain, and the modules of its build list. govulncheck reads such a
// directory of OSV files with -db file://..., which lets `make lint` run it
// on machines that cannot reach the database's server (this workplace, and
// so CI). The build list it was cut for is written to MODULES, so lint can
// tell when a new dependency is not covered and the snapshot must be cut
// again.
//
// Usage: go list -m -f '{{.Path}}' all | go run ./test/tools/vulndb -osv DIR -out test/vulndb
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stderr))
}

type entry struct {
	ID       string `json:"id"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
	} `json:"affected"`
}

func run(args []string, stdin io.Reader, stderr io.Writer) int {
	fs := flag.NewFlagSet("vulndb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	osvDir := fs.String("osv", "", "directory of OSV entries (the database's data/osv)")
	out := fs.String("out", "", "directory to write the cut snapshot to (its *.json are replaced)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *osvDir == "" || *out == "" {
		fmt.Fprintln(stderr, "vulndb: -osv and -out are required; module paths come on stdin")
		return 2
	}
	if err := cut(*osvDir, *out, stdin); err != nil {
		fmt.Fprintln(stderr, "vulndb:", err)
		return 1
	}
	return 0
}

func cut(osvDir, out string, modulesIn io.Reader) error {
	want := map[string]bool{"stdlib": true, "toolchain": true}
	var modules []string
	sc := bufio.NewScanner(modulesIn)
	for sc.Scan() {
		if m := strings.TrimSpace(sc.Text()); m != "" && !want[m] {
			want[m] = true
			modules = append(modules, m)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(modules) == 0 {
		return fmt.Errorf("no module paths on stdin")
	}
	names, err := filepath.Glob(filepath.Join(osvDir, "GO-*.json"))
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("%s: no GO-*.json entries", osvDir)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(out, "GO-*.json"))
	for _, o := range old {
		if err := os.Remove(o); err != nil {
			return err
		}
	}
	kept := 0
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		var e entry
		if err := json.Unmarshal(b, &e); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if filepath.Base(name) != e.ID+".json" {
			return fmt.Errorf("%s: id %q does not match the file name", name, e.ID)
		}
		for _, a := range e.Affected {
			if want[a.Package.Name] {
				if err := os.WriteFile(filepath.Join(out, filepath.Base(name)), b, 0o644); err != nil {
					return err
				}
				kept++
				break
			}
		}
	}
	sort.Strings(modules)
	if err := os.WriteFile(filepath.Join(out, "MODULES"), []byte(strings.Join(modules, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Printf("vulndb: kept %d of %d entries for stdlib, toolchain and %d modules\n", kept, len(names), len(modules))
	return nil
}
