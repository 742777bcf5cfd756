package config

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Size is a number of bytes written with an optional unit: "512MB", "10GiB",
// "1048576". KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB of 1024.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

func parseSize(s string) (Size, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (write e.g. \"512MB\", \"10GiB\")", s)
	}
	return Size(n * mult), nil
}

// UnmarshalYAML reads a size.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return typeError(n, "want a size like \"10GB\"")
	}
	v, err := parseSize(s)
	if err != nil {
		return typeError(n, err.Error())
	}
	*z = v
	return nil
}

// MarshalYAML writes the number of bytes.
func (z Size) MarshalYAML() (any, error) { return strconv.FormatInt(int64(z), 10), nil }

// MinMemoryLimit is the least memory_limit: below it the garbage collector
// would run almost without pause.
const MinMemoryLimit Size = 64 << 20
