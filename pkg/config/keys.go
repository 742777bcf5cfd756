package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// keyCheck walks a config file's YAML against the Config type: every key
// that names no setting is a problem, with its key path and, when a known
// key is close, that one; and it records the key path of each line, so that
// a value of the wrong type is reported by its key too.
type keyCheck struct {
	problems []string
	// pathAt is the key path of the value on each line.
	pathAt map[int]string
}

// checkKeys returns the problems of unknown keys in doc, and the key path
// of each line.
func checkKeys(doc *yaml.Node) keyCheck {
	k := keyCheck{pathAt: map[int]string{}}
	if doc != nil && doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		k.walk(doc.Content[0], reflect.TypeFor[Config](), "")
	}
	return k
}

func (k *keyCheck) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // a type error, which the decoder reports
		}
		fields := yamlFields(t)
		onLine := map[int]bool{} // lines with a key of this map
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			if key.Value == "<<" {
				k.walk(val, t, path) // a merged map: its keys are this map's
				continue
			}
			p := join(path, key.Value, ".")
			k.pathAt[key.Line] = p
			if onLine[key.Line] {
				// Several keys of this map on one line ({a: 1, b: x}): the
				// decoder's line says which map, not which key.
				k.pathAt[key.Line] = path
			}
			onLine[key.Line] = true
			f, ok := fields[key.Value]
			if !ok {
				k.problems = append(k.problems, unknownKey(p, path, key.Line, fields))
				continue
			}
			k.walk(val, f, p)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if name := nameOf(item); name != "" {
				p = fmt.Sprintf("%s[%s]", path, name)
			}
			k.pathAt[item.Line] = p
			k.walk(item, t.Elem(), p)
		}
	}
}

// yamlFields are a struct's settings by YAML key.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag != "" && tag != "-" {
			out[tag] = t.Field(i).Type
		}
	}
	return out
}

// nameOf is the name: of a list entry (a region, an app), if it has one.
func nameOf(n *yaml.Node) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// unknownKey says that p is no setting, and which known key of its map it
// may have meant.
func unknownKey(p, parent string, line int, fields map[string]reflect.Type) string {
	last := p[strings.LastIndex(p, ".")+1:]
	best, bestD := "", 3 // at most two edits away, and closer than any other
	for f := range fields {
		if d := editDistance(last, f); d < bestD || (d == bestD && f < best) {
			best, bestD = f, d
		}
	}
	if best != "" && bestD <= max(1, len(last)/4) {
		return fmt.Sprintf("%s (line %d): no such setting; did you mean %s?", p, line, join(parent, best, "."))
	}
	return fmt.Sprintf("%s (line %d): no such setting (docs/configuration.md lists them)", p, line)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// valueProblem rewrites a YAML decoder's "line N: msg" as "key (line N):
// msg", msg in words rather than Go's type names.
func (k keyCheck) valueProblem(e string) string {
	var line int
	if _, err := fmt.Sscanf(e, "line %d:", &line); err != nil {
		return e
	}
	msg := strings.TrimSpace(e[strings.Index(e, ":")+1:])
	if m := cannotUnmarshal.FindStringSubmatch(msg); m != nil {
		want := typeWords(m[3])
		if m[2] != "" {
			msg = fmt.Sprintf("`%s` is not %s", m[2], want)
		} else {
			msg = fmt.Sprintf("want %s, not a YAML %s", want, yamlKind(m[1]))
		}
	}
	if p, ok := k.pathAt[line]; ok {
		return fmt.Sprintf("%s (line %d): %s", p, line, msg)
	}
	return fmt.Sprintf("line %d: %s", line, msg)
}

// cannotUnmarshal is yaml's "cannot unmarshal !!str `lots` into int".
var cannotUnmarshal = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")

// typeWords says a Go type of the config as its user knows it.
func typeWords(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "a map"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "text"
	}
	return "a map of settings"
}

func yamlKind(tag string) string {
	switch tag {
	case "seq":
		return "list"
	case "map":
		return "map"
	}
	return "value"
}
