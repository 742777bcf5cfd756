package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that overrides a setting.
const EnvPrefix = "GEOMUX_"

// EnvConfigFile names the config file when --config is not given. It is the
// one GEOMUX_ variable that is not a setting.
const EnvConfigFile = EnvPrefix + "CONFIG"

// Error lists every problem found in a configuration, one per line.
type Error struct {
	// Source is the file (or "environment") the problems were found in.
	Source   string
	Problems []string
}

func (e *Error) Error() string {
	return "invalid config " + e.Source + ":\n  " + strings.Join(e.Problems, "\n  ")
}

// Load reads the YAML file at path on top of Default, applies the GEOMUX_*
// variables of environ (os.Environ() form), fills defaults and validates the
// result for the given roles (all roles when none is given). Every problem is
// reported at once in an *Error.
func Load(path string, environ []string, roles ...Role) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(f)
	if err != nil {
		return Config{}, fmt.Errorf("read config %s: %w", path, err)
	}
	c, err := Read(path, bytes.NewReader(raw), environ, roles...)
	if err != nil {
		return c, err
	}
	// What the file itself holds, not the environment's secrets.
	file, _, _ := decode(path, raw)
	if st, err := f.Stat(); err == nil {
		if w := readableByOthers(path, st.Mode(), &file); w != "" {
			c.Warnings = append(c.Warnings, w)
		}
	}
	return c, nil
}

// Read is Load for a config that is not in a file; name is used in messages.
func Read(name string, r io.Reader, environ []string, roles ...Role) (Config, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return Config{}, fmt.Errorf("read config %s: %w", name, err)
	}
	cfg, problems, err := decode(name, raw)
	if err != nil {
		return Config{}, err
	}
	problems = append(problems, applyEnv(&cfg, environ)...)
	for i := range cfg.Regions {
		cfg.Regions[i].setDefaults()
	}
	problems = append(problems, cfg.problems(roles)...)
	if len(problems) > 0 {
		return Config{}, &Error{Source: name, Problems: problems}
	}
	return cfg, nil
}

// decode reads a YAML config on top of Default. Lists in the file replace
// the defaults' lists; an empty file keeps every default. Keys that name no
// setting and values of the wrong kind are problems, each with its key
// path, reported with the others; only a file that is not YAML is an error
// at once.
func decode(name string, raw []byte) (Config, []string, error) {
	cfg := Default()
	if len(bytes.TrimSpace(raw)) == 0 {
		return cfg, nil, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return Config{}, nil, &Error{Source: name, Problems: []string{strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	keys := checkKeys(&doc)
	problems := keys.problems
	if err := doc.Decode(&cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return Config{}, nil, &Error{Source: name, Problems: []string{strings.TrimPrefix(err.Error(), "yaml: ")}}
		}
		for _, e := range te.Errors {
			problems = append(problems, keys.valueProblem(e))
		}
	}
	return cfg, problems, nil
}

// setting is one overridable leaf of the config.
type setting struct {
	path string // yaml path, e.g. zoom.client_secret
	v    reflect.Value
}

// settings lists every leaf of cfg with its environment variable name.
// List entries with a name field (regions) are addressed by that name:
// GEOMUX_REGIONS_EU_BACKEND_URL.
func settings(cfg *Config) map[string]setting {
	out := map[string]setting{}
	var walk func(v reflect.Value, path, env string)
	walk = func(v reflect.Value, path, env string) {
		switch {
		case v.Kind() == reflect.Struct:
			t := v.Type()
			for i := 0; i < t.NumField(); i++ {
				tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
				if tag == "" || tag == "-" {
					continue
				}
				walk(v.Field(i), join(path, tag, "."), join(env, strings.ToUpper(tag), "_"))
			}
		case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
			for i := 0; i < v.Len(); i++ {
				name := v.Index(i).FieldByName("Name").String()
				if name == "" {
					continue
				}
				tok := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
				walk(v.Index(i), fmt.Sprintf("%s[%s]", path, name), join(env, tok, "_"))
			}
		default:
			out[EnvPrefix+env] = setting{path: path, v: v}
		}
	}
	walk(reflect.ValueOf(cfg).Elem(), "", "")
	return out
}

func join(a, b, sep string) string {
	if a == "" {
		return b
	}
	return a + sep + b
}

// kubernetesServiceLink reports the variables Kubernetes sets in every pod
// for a Service named geomux (GEOMUX_PORT, GEOMUX_SERVICE_HOST, ...): they
// are not settings, and must not stop geomux from starting.
func kubernetesServiceLink(k string) bool {
	return k == EnvPrefix+"PORT" || strings.HasPrefix(k, EnvPrefix+"PORT_") || strings.HasPrefix(k, EnvPrefix+"SERVICE_")
}

var (
	durationType = reflect.TypeFor[Duration]()
	sizeType     = reflect.TypeFor[Size]()
)

// applyEnv sets every GEOMUX_* variable of environ on cfg and reports those
// that name no setting or hold a bad value.
func applyEnv(cfg *Config, environ []string) []string {
	known := settings(cfg)
	var problems []string
	var names []string
	vals := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) || k == EnvConfigFile || kubernetesServiceLink(k) {
			continue
		}
		names = append(names, k)
		vals[k] = v
	}
	sort.Strings(names)
	for _, k := range names {
		s, ok := known[k]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: no such setting (variables are GEOMUX_ + the key path in capitals, e.g. GEOMUX_ZOOM_CLIENT_SECRET, GEOMUX_REGIONS_EU_BACKEND_URL)", k))
			continue
		}
		if err := setValue(s.v, vals[k]); err != nil {
			problems = append(problems, fmt.Sprintf("%s (%s): %v", k, s.path, err))
		}
	}
	return problems
}

func setValue(v reflect.Value, s string) error {
	switch {
	case v.Type() == durationType:
		d, err := parseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
	case v.Type() == sizeType:
		z, err := parseSize(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(z))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		v.SetInt(int64(n))
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%q is not a number", s)
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Slice:
		// Lists are comma-separated: GEOMUX_ZOOM_WEBHOOK_SECRET_TOKENS=new,old
		var parts []string
		if s != "" {
			parts = strings.Split(s, ",")
		}
		out := reflect.MakeSlice(v.Type(), len(parts), len(parts))
		for i, p := range parts {
			if err := setValue(out.Index(i), strings.TrimSpace(p)); err != nil {
				return err
			}
		}
		v.Set(out)
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}
