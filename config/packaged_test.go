package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// The packaged conffile documents every key with its real default, and
// parses (commented or not) to the defaults.
func TestPackagedConfigFile(t *testing.T) {
	data, err := os.ReadFile("../packaging/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("packaging/config.yaml", data, Defaults())
	if err != nil || !reflect.DeepEqual(c, Defaults()) {
		t.Fatalf("commented file: %+v %v", c, err)
	}
	d := Defaults()
	var uncommented []string
	for _, k := range Keys() {
		re := regexp.MustCompile(`(?m)^#` + k.Name + `: (.*)$`)
		m := re.FindStringSubmatch(string(data))
		if m == nil {
			t.Errorf("key %s not documented", k.Name)
			continue
		}
		if def := k.Get(&d); def != "" && m[1] != def {
			t.Errorf("key %s documented with %q, default is %q", k.Name, m[1], def)
		}
		if k.Get(&d) != "" {
			uncommented = append(uncommented, k.Name+": "+m[1])
		}
	}
	c, err = Parse("uncommented", []byte(strings.Join(uncommented, "\n")), Defaults())
	if err != nil {
		t.Fatal(err)
	}
	c.ValiditySet, c.PKIDirSet = false, false
	if !reflect.DeepEqual(c, d) {
		t.Errorf("uncommented defaults differ: %+v", c)
	}
}
