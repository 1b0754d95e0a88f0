package main

import (
	"strings"
	"testing"
)

// Earlier builds' form of a boolean configuration flag, its value as the
// next argument, is rewritten to --flag=value with a note; nothing else is.
func TestLegacyBoolArgs(t *testing.T) {
	bools := map[string]bool{"restart-components": true, "etcd-quorum-guard": true}
	valued := map[string]bool{"node-name": true, "config": true, "output": true, "o": true}
	for _, tc := range []struct {
		name  string
		args  string
		want  string
		notes int
	}{
		{"space form", "check --restart-components false", "check --restart-components=false", 1},
		{"before the subcommand", "--restart-components false check", "--restart-components=false check", 1},
		{"ParseBool's forms, canonical after", "run --restart-components 0 --etcd-quorum-guard TRUE", "run --restart-components=false --etcd-quorum-guard=true", 2},
		{"t and F", "run --restart-components t --etcd-quorum-guard F", "run --restart-components=true --etcd-quorum-guard=false", 2},
		{"yes was never taken", "renew --restart-components yes", "renew --restart-components yes", 0},
		{"mixed case was never taken", "renew --restart-components fAlSe", "renew --restart-components fAlSe", 0},
		{"equals form untouched", "check --restart-components=false", "check --restart-components=false", 0},
		{"alone, then a name", "renew --restart-components apiserver", "renew --restart-components apiserver", 0},
		{"last argument", "check --restart-components", "check --restart-components", 0},
		{"not a configuration boolean", "renew --force true", "renew --force true", 0},
		{"after --", "renew -- --restart-components false", "renew -- --restart-components false", 0},
		{"before and after --", "renew --etcd-quorum-guard 1 -- --restart-components false", "renew --etcd-quorum-guard=true -- --restart-components false", 1},
		{"a value that looks like the flag", "check --node-name --restart-components false", "check --node-name --restart-components false", 0},
		{"a shorthand's value", "check -o --restart-components", "check -o --restart-components", 0},
		{"a value that is a boolean word", "check --config false --restart-components false", "check --config false --restart-components=false", 1},
	} {
		got, notes := legacyBoolArgs(strings.Fields(tc.args), bools, valued)
		if strings.Join(got, " ") != tc.want || len(notes) != tc.notes {
			t.Errorf("%s: %q -> %q with notes %q, want %q with %d", tc.name, tc.args, got, notes, tc.want, tc.notes)
		}
	}
	_, notes := legacyBoolArgs([]string{"--restart-components", "false"}, bools, valued)
	if want := "--restart-components false: write --restart-components=false (the form with a space is deprecated)"; len(notes) != 1 || notes[0] != want {
		t.Errorf("note %q, want %q", notes, want)
	}
}
