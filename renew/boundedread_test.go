package renew_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// inventoryWithin takes the inventory in a goroutine so that a read that
// blocks (a FIFO) fails the test instead of hanging it.
func inventoryWithin(t *testing.T, f *fixture, d time.Duration) *renew.Inventory {
	t.Helper()
	done := make(chan *renew.Inventory, 1)
	go func() { done <- f.inventory(t) }()
	select {
	case inv := <-done:
		return inv
	case <-time.After(d):
		t.Fatalf("the inventory did not return within %v: a read blocked", d)
		return nil
	}
}

func itemErr(t *testing.T, inv *renew.Inventory, name string) error {
	t.Helper()
	it := inv.Find(name)
	if it == nil {
		t.Fatalf("no item %s", name)
	}
	return it.Err
}

// A FIFO named by kubelet.conf's client-certificate: the kubelet rotates
// that file, we only read it, and the read must not wait for a writer.
func TestKubeletClientCertFIFOIsAnErrorNotAHang(t *testing.T) {
	t.Parallel()
	kpki := filepath.Join(t.TempDir(), "kubelet-pki")
	f := newFixture(t, renewtest.Options{KubeletPKIDir: kpki})
	cur := filepath.Join(kpki, "kubelet-client-current.pem")
	if err := os.Remove(cur); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(cur, 0o600); err != nil {
		t.Fatal(err)
	}
	err := itemErr(t, inventoryWithin(t, f, 10*time.Second), "kubelet.conf")
	if err == nil || !strings.Contains(err.Error(), cur) || !strings.Contains(err.Error(), "FIFO") {
		t.Fatalf("kubelet.conf with a FIFO client certificate: %v", err)
	}
}

// Every other item stays readable and the renewal refuses with the file's
// name when one managed file is oversized or not a regular file.
func TestOversizedAndSpecialFilesAreRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file, item, want string
		make                   func(p string) error
	}{
		{"sparse 2 MiB certificate", "pki/front-proxy-client.crt", "front-proxy-client", "more than the 1048576", func(p string) error {
			return os.Truncate(p, 2<<20)
		}},
		{"2 MiB kubeconfig", "scheduler.conf", "scheduler.conf", "more than the 1048576", func(p string) error {
			return os.WriteFile(p, make([]byte, 2<<20), 0o600)
		}},
		{"FIFO key", "pki/apiserver.key", "apiserver", "FIFO", func(p string) error {
			if err := os.Remove(p); err != nil {
				return err
			}
			return syscall.Mkfifo(p, 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, renewtest.Options{})
			p := filepath.Join(f.layout.KubeconfigDir, tc.file)
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			before, err := renewtest.HashTree(f.root)
			if err != nil {
				t.Fatal(err)
			}
			err = itemErr(t, inventoryWithin(t, f, 10*time.Second), tc.item)
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: %v", tc.file, err)
			}
			_, err = f.renew(t, f.renewer(nil), renew.Selection{Force: true, Names: []string{tc.item}})
			if err == nil || !strings.Contains(err.Error(), p) {
				t.Fatalf("renewal of %s: %v", tc.item, err)
			}
			after, _ := renewtest.HashTree(f.root)
			if d := renewtest.DiffTrees(before, after); d != "" {
				t.Fatalf("changed:\n%s", d)
			}
		})
	}
}
