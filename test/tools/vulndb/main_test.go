package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeEntry(t *testing.T, dir, id string, modules ...string) {
	t.Helper()
	var aff []string
	for _, m := range modules {
		aff = append(aff, `{"package":{"name":"`+m+`","ecosystem":"Go"}}`)
	}
	b := `{"id":"` + id + `","affected":[` + strings.Join(aff, ",") + `]}`
	if err := os.WriteFile(filepath.Join(dir, id+".json"), []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCutKeepsStdlibToolchainAndBuildList(t *testing.T) {
	in, out := t.TempDir(), t.TempDir()
	writeEntry(t, in, "GO-2020-0001", "stdlib")
	writeEntry(t, in, "GO-2020-0002", "toolchain")
	writeEntry(t, in, "GO-2020-0003", "example.com/other", "github.com/sirupsen/logrus")
	writeEntry(t, in, "GO-2020-0004", "example.com/other")
	// A stale entry from an earlier cut must not survive.
	writeEntry(t, out, "GO-1999-0001", "stdlib")

	var stderr bytes.Buffer
	modules := "github.com/sirupsen/logrus\n\nk8s.io/utils\n"
	if rc := run([]string{"-osv", in, "-out", out}, strings.NewReader(modules), &stderr); rc != 0 {
		t.Fatalf("exit %d: %s", rc, stderr.String())
	}
	got, _ := filepath.Glob(filepath.Join(out, "GO-*.json"))
	for i := range got {
		got[i] = filepath.Base(got[i])
	}
	want := []string{"GO-2020-0001.json", "GO-2020-0002.json", "GO-2020-0003.json"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("kept %v, want %v", got, want)
	}
	b, err := os.ReadFile(filepath.Join(out, "MODULES"))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "github.com/sirupsen/logrus\nk8s.io/utils\n" {
		t.Fatalf("MODULES = %q", b)
	}
}

func TestCutRefusesBadInput(t *testing.T) {
	for name, tc := range map[string]struct {
		setup   func(dir string)
		modules string
		want    string
	}{
		"no modules": {func(string) {}, "", "no module paths"},
		"empty dir":  {func(string) {}, "x\n", "no GO-*.json"},
		"corrupt":    {func(d string) { os.WriteFile(filepath.Join(d, "GO-1-1.json"), []byte("{"), 0o644) }, "x\n", "GO-1-1.json"},
		"misnamed": {func(d string) {
			os.WriteFile(filepath.Join(d, "GO-1-1.json"), []byte(`{"id":"GO-1-2"}`), 0o644)
		}, "x\n", "does not match"},
	} {
		t.Run(name, func(t *testing.T) {
			in := t.TempDir()
			tc.setup(in)
			var stderr bytes.Buffer
			rc := run([]string{"-osv", in, "-out", t.TempDir()}, strings.NewReader(tc.modules), &stderr)
			if rc != 1 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", rc, stderr.String(), tc.want)
			}
		})
	}
}
