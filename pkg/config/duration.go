package config

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as in Go ("1s", "2m30s", "24h").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return typeError(n, "want a duration like \"5s\"")
	}
	v, err := parseDuration(s)
	if err != nil {
		return typeError(n, err.Error())
	}
	*d = Duration(v)
	return nil
}

// typeError is a value's problem as the YAML decoder collects them (it
// goes on decoding the rest, so that every problem is reported at once).
func typeError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

func parseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write e.g. \"500ms\", \"5s\", \"2h\")", s)
	}
	return v, nil
}
