package main

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/pkirenewd/pkirenewd/config"
)

// keyFlag is a configuration key as a typed flag: its value is checked as
// it is parsed (a bad value is an error naming the flag), --help shows its
// type and default, a boolean needs no argument (--restart-components, or
// =false), and a list repeats (each --admin-kubeconfig-copies adds). The
// values are applied over the config file in loadConfig, so flags keep
// overriding the file on every reload.
type keyFlag struct {
	key config.Key
	def string
	// values given, in order.
	values []string
}

var _ pflag.Value = (*keyFlag)(nil)

func (f *keyFlag) String() string {
	if len(f.values) == 0 {
		return f.def
	}
	return strings.Join(f.values, ",")
}

func (f *keyFlag) Type() string { return f.key.TypeName() }

// Set checks v against the key's own parser (on a scratch config) and
// keeps it.
func (f *keyFlag) Set(v string) error {
	scratch := config.Defaults()
	if err := f.key.Set(&scratch, v); err != nil {
		return err
	}
	if f.key.IsList() {
		f.values = append(f.values, v)
	} else {
		f.values = []string{v}
	}
	return nil
}

// value is what to apply: the last one, or for a list all of them.
func (f *keyFlag) value() string { return strings.Join(f.values, ",") }

// addKeyFlags registers every configuration key as a typed flag.
func addKeyFlags(fs *pflag.FlagSet) map[string]*keyFlag {
	defaults := config.Defaults()
	out := map[string]*keyFlag{}
	for _, k := range config.Keys() {
		f := &keyFlag{key: k, def: k.Get(&defaults)}
		out[k.Name] = f
		fl := fs.VarPF(f, k.Flag, "", k.Usage)
		if k.TypeName() == "bool" {
			fl.NoOptDefVal = "true"
		}
	}
	return out
}
