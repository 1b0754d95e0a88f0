package config

import "testing"

func FuzzParse(f *testing.F) {
	f.Add([]byte("renewBefore: 90d\nvalidity: 365d\npkiDir: /etc/kubernetes/pki\n"))
	f.Add([]byte("unknown: 1\n"))
	f.Add([]byte("renewBefore: -1d\n"))
	f.Add([]byte("- a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data, Defaults())
		if err != nil {
			return
		}
		if c.RenewBefore <= 0 || c.Validity <= 0 || c.CAWarnBefore <= 0 || c.RestartTimeout <= 0 {
			t.Fatalf("non-positive duration accepted: %+v", c)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"90d", "1d12h", "0.5d", "2160h", "", "d", "1e9d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ParseDuration(s)
	})
}
