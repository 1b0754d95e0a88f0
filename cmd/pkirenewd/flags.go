package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
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

// legacyBoolArgs rewrites the form earlier builds took for a boolean
// configuration flag, its value as the next argument
// (--restart-components false), to the one these flags take
// (--restart-components=false), and returns a note for each rewrite.
// Earlier builds took every configuration flag as a string and parsed a
// boolean with strconv.ParseBool, so the values rewritten are exactly
// those: true, false, 1, 0, t, f (and TRUE, True, T, FALSE, False, F).
// bools are the boolean configuration flags; valued are the flags that
// take the next argument as their value (long names, and shorthands as a
// single letter), so that a value is never read as a flag. Nothing after
// "--" is touched.
func legacyBoolArgs(args []string, bools, valued map[string]bool) (out, notes []string) {
	out = make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		out = append(out, a)
		if a == "--" {
			return append(out, args[i+1:]...), notes
		}
		var name string
		switch {
		case strings.HasPrefix(a, "--"):
			name = a[2:]
		case len(a) == 2 && a[0] == '-':
			name = a[1:]
		default:
			continue
		}
		if strings.Contains(name, "=") || i+1 == len(args) {
			continue
		}
		if valued[name] {
			out = append(out, args[i+1])
			i++
			continue
		}
		b, err := strconv.ParseBool(args[i+1])
		if !bools[name] || err != nil {
			continue
		}
		fixed := a + "=" + strconv.FormatBool(b)
		notes = append(notes, fmt.Sprintf("%s %s: write %s (the form with a space is deprecated)", a, args[i+1], fixed))
		out[len(out)-1] = fixed
		i++
	}
	return out, notes
}

// flagForms lists, for legacyBoolArgs, the boolean configuration flags
// and every flag of root and its subcommands that takes a value.
func flagForms(root *cobra.Command) (bools, valued map[string]bool) {
	bools, valued = map[string]bool{}, map[string]bool{}
	for _, k := range config.Keys() {
		if k.TypeName() == "bool" {
			bools[k.Flag] = true
		}
	}
	add := func(f *pflag.Flag) {
		if f.NoOptDefVal == "" {
			valued[f.Name] = true
			if f.Shorthand != "" {
				valued[f.Shorthand] = true
			}
		}
	}
	root.PersistentFlags().VisitAll(add)
	for _, c := range root.Commands() {
		c.Flags().VisitAll(add)
	}
	return bools, valued
}
