package cplane

import (
	"os"
	"testing"
)

// A temp log dir goes when the test passed and stays when it failed; a
// dir under PKIRENEWD_E2E_LOGS always stays.
func TestKeepLogs(t *testing.T) {
	for _, tc := range []struct {
		temp, failed, kept bool
	}{{true, false, false}, {true, true, true}, {false, false, true}, {false, true, true}} {
		s := Setup{LogDir: t.TempDir(), LogDirIsTemp: tc.temp}
		got := s.KeepLogs(tc.failed)
		_, err := os.Stat(s.LogDir)
		if (got != "") != tc.kept || (err == nil) != tc.kept || (tc.kept && got != s.LogDir) {
			t.Errorf("temp %v, failed %v: KeepLogs %q, dir there: %v; want kept %v", tc.temp, tc.failed, got, err == nil, tc.kept)
		}
	}
}
