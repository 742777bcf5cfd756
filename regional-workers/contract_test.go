package workers_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// The backend contract's OpenAPI document (proto/backend.openapi.yaml)
// checked against what geomux really does: it is a valid OpenAPI 3.1
// document; its schemas have the fields, types and required fields of the
// proto types; the envelope the worker really POSTs validates against the
// request (contract_envelope_test.go); the answers ParseBackendAnswer
// accepts validate against the 200 answer, and those it refuses are refused
// (contract_answers_test.go). Each check is also run on a wrong document,
// which it must fail.
//
// The library is pb33f's libopenapi and libopenapi-validator: OpenAPI 3.1
// native (schemas are JSON Schema 2020-12), it checks a document against
// the OpenAPI specification's own schema, and validates real HTTP requests
// and responses (headers, content type, status, body) against a document,
// with a strict mode that reports any property the document does not
// declare.

// contract is a parsed OpenAPI document and its validator.
type contract struct {
	doc   libopenapi.Document
	model *v3.Document
	val   validator.Validator
}

// loadContract parses doc; strict makes the validator report undeclared
// properties and headers, except in the Zoom bytes the envelope carries.
func loadContract(doc []byte, strict bool) (*contract, error) {
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	m, err := d.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("build the OpenAPI 3 model: %w", err)
	}
	opts := []config.Option{config.WithFormatAssertions()}
	if strict {
		opts = append(opts, config.WithStrictMode(), config.WithStrictIgnorePaths("$.body.payload", "$.body.payload.**"))
	}
	v, errs := validator.NewValidator(d, opts...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("validator: %v", errs)
	}
	return &contract{doc: d, model: &m.Model, val: v}, nil
}

// schema is a component schema of the document, or nil.
func (c *contract) schema(name string) *base.Schema {
	if c.model.Components == nil || c.model.Components.Schemas == nil {
		return nil
	}
	p, ok := c.model.Components.Schemas.Get(name)
	if !ok {
		return nil
	}
	return p.Schema()
}

// mustContract is loadContract of proto.BackendOpenAPI, failing the test on
// an error.
func mustContract(t *testing.T, strict bool) *contract {
	t.Helper()
	c, err := loadContract(proto.BackendOpenAPI(), strict)
	if err != nil {
		t.Fatalf("proto/backend.openapi.yaml: %v", err)
	}
	return c
}

// mutated is the document with old replaced by new, for a check to fail
// on; old must occur exactly once, so that a change to the document
// cannot turn the mutation into a no-op.
func mutated(t *testing.T, old, new string) []byte {
	t.Helper()
	doc := string(proto.BackendOpenAPI())
	if n := strings.Count(doc, old); n != 1 {
		t.Fatalf("mutation: %q occurs %d times in proto/backend.openapi.yaml, want once", old, n)
	}
	return []byte(strings.Replace(doc, old, new, 1))
}

// documentProblems is what is wrong with doc as an OpenAPI 3.1 document.
func documentProblems(doc []byte) []string {
	c, err := loadContract(doc, false)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	if v := c.doc.GetSpecInfo().Version; v != "3.1.0" {
		out = append(out, fmt.Sprintf("openapi: %q, want 3.1.0", v))
	}
	if ok, errs := c.val.ValidateDocument(); !ok {
		for _, e := range errs {
			out = append(out, e.Error())
			for _, f := range e.SchemaValidationErrors {
				out = append(out, "  "+f.Error())
			}
		}
	}
	// The OpenAPI specification's schema does not look into Schema
	// Objects: each must compile as JSON Schema 2020-12 (the meta-schema
	// checks every keyword).
	if c.model.Components != nil && c.model.Components.Schemas != nil {
		opts := config.NewValidationOptions()
		for name, p := range c.model.Components.Schemas.FromOldest() {
			if _, err := schema_validation.CompileSchemaForValidation(p.Schema(), schema_validation.SchemaValidationPurposeGeneric, opts, 3.1); err != nil {
				out = append(out, fmt.Sprintf("components.schemas.%s: %v", name, err))
			}
		}
	}
	if c.model.Paths == nil {
		return append(out, "no paths")
	}
	item, ok := c.model.Paths.PathItems.Get("/")
	if !ok || item.Post == nil {
		return append(out, "no POST / (the call to backend_url)")
	}
	headers := map[string]bool{}
	for _, p := range item.Post.Parameters {
		if p.In == "header" && p.Required != nil && *p.Required {
			headers[p.Name] = true
		}
	}
	for _, h := range []string{proto.HTTPHeaderEventID, proto.HTTPHeaderRegion} {
		if !headers[h] {
			out = append(out, "POST / does not require header "+h)
		}
	}
	for _, code := range []string{"200", "204"} {
		if _, ok := item.Post.Responses.Codes.Get(code); !ok {
			out = append(out, "POST / has no response "+code)
		}
	}
	return append(out, c.exampleProblems(item.Post)...)
}

// exampleProblems validates the examples of the request and of the 200
// answer: developers copy them.
func (c *contract) exampleProblems(op *v3.Operation) []string {
	var out []string
	if op.RequestBody == nil {
		return []string{"POST / has no request body"}
	}
	mt, ok := op.RequestBody.Content.Get("application/json")
	if !ok || mt.Example == nil {
		return []string{"POST / has no application/json request example"}
	}
	var example any
	if err := mt.Example.Decode(&example); err != nil {
		return []string{fmt.Sprintf("request example: %v", err)}
	}
	body, err := json.Marshal(example)
	if err != nil {
		return []string{fmt.Sprintf("request example: %v", err)}
	}
	var env proto.BackendRequest
	if err := json.Unmarshal(body, &env); err != nil {
		out = append(out, fmt.Sprintf("request example is no proto.BackendRequest: %v", err))
	}
	req, err := http.NewRequest(http.MethodPost, "https://backend.example.com/", bytes.NewReader(body))
	if err != nil {
		return []string{err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(proto.HTTPHeaderEventID, env.ID)
	req.Header.Set(proto.HTTPHeaderRegion, env.Region)
	if ok, errs := c.val.ValidateHttpRequestSync(req); !ok {
		for _, e := range errs {
			out = append(out, "request example: "+e.Error())
		}
	}

	r, ok := op.Responses.Codes.Get("200")
	if !ok || r.Content == nil {
		return append(out, "POST / has no 200 answer")
	}
	mt, ok = r.Content.Get("application/json")
	if !ok || mt.Example == nil {
		return append(out, "the 200 answer has no application/json example")
	}
	example = nil
	if err := mt.Example.Decode(&example); err != nil {
		return append(out, fmt.Sprintf("answer example: %v", err))
	}
	if body, err = json.Marshal(example); err != nil {
		return append(out, fmt.Sprintf("answer example: %v", err))
	}
	if _, err := workers.ParseBackendAnswer(body); err != nil {
		out = append(out, fmt.Sprintf("answer example: geomux refuses it: %v", err))
	}
	if ok, why := c.validAnswer(http.StatusOK, "application/json", string(body)); !ok {
		out = append(out, "answer example: "+why)
	}
	return out
}

func TestBackendOpenAPIIsOpenAPI31(t *testing.T) {
	t.Parallel()
	if p := documentProblems(proto.BackendOpenAPI()); len(p) > 0 {
		t.Fatalf("proto/backend.openapi.yaml:\n%s", strings.Join(p, "\n"))
	}
	for name, doc := range map[string][]byte{
		"no title":         mutated(t, "  title: geomux backend contract\n", ""),
		"3.0 types":        mutated(t, "openapi: 3.1.0", "openapi: 3.0.3"),
		"bad status":       mutated(t, `        "204":`, `        "20x":`),
		"region header":    mutated(t, "- name: X-Geomux-Region", "- name: X-Geomux-Zone"),
		"schema not typed": mutated(t, "        edits:\n          type: [array, \"null\"]", "        edits:\n          type: [list]"),
		"request example":  mutated(t, "                event_ts: 1560796234686", "                event_ts: soon"),
		"answer example":   mutated(t, "                    is_markdown_support: true", "                    is_markdown_support: yes please"),
	} {
		if len(documentProblems(doc)) == 0 {
			t.Errorf("a wrong document (%s) passes", name)
		}
	}
}

// contractTypes are the document's schemas of the proto types. answer
// marks the answer's: a backend may leave out any of their fields but
// content (ParseBackendAnswer refuses an answer without), where the
// request's fields without omitempty are always sent.
var contractTypes = []struct {
	typ    reflect.Type
	answer bool
}{
	{reflect.TypeFor[proto.BackendRequest](), false},
	{reflect.TypeFor[proto.UnfurlTarget](), false},
	{reflect.TypeFor[proto.UserToken](), false},
	{reflect.TypeFor[proto.BackendResponse](), true},
	{reflect.TypeFor[proto.ChatMessage](), true},
	{reflect.TypeFor[proto.EditMessage](), true},
	{reflect.TypeFor[proto.DeleteMessage](), true},
	{reflect.TypeFor[proto.UnfurlLink](), true},
}

// typeProblems is where the document's schemas and the proto types
// differ: a field missing or extra, a type, a required field.
func typeProblems(doc []byte) []string {
	c, err := loadContract(doc, false)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	described := map[string]bool{}
	for _, ct := range contractTypes {
		described[ct.typ.Name()] = true
	}
	for _, ct := range contractTypes {
		name := ct.typ.Name()
		s := c.schema(name)
		if s == nil {
			out = append(out, "no schema "+name)
			continue
		}
		if !slices.Equal(s.Type, []string{"object"}) {
			out = append(out, fmt.Sprintf("%s: type %v, want object", name, s.Type))
		}
		declared := map[string]bool{}
		if s.Properties != nil {
			for k := range s.Properties.KeysFromOldest() {
				declared[k] = true
			}
		}
		var required []string
		for i := range ct.typ.NumField() {
			f := ct.typ.Field(i)
			tag, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || tag == "-" || tag == "" {
				continue
			}
			field := name + "." + tag
			if !declared[tag] {
				out = append(out, field+": not in the document")
				continue
			}
			delete(declared, tag)
			p, _ := s.Properties.Get(tag)
			out = append(out, fieldProblems(field, f.Type, p, ct.answer, described)...)
			omitted := strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero")
			if (!ct.answer && !omitted) || (ct.answer && tag == "content") {
				required = append(required, tag)
			}
		}
		for k := range declared {
			out = append(out, name+"."+k+": in the document, not in proto")
		}
		have := slices.Sorted(slices.Values(s.Required))
		if slices.Sort(required); !slices.Equal(have, required) {
			out = append(out, fmt.Sprintf("%s: required %v, want %v", name, have, required))
		}
	}
	return out
}

// fieldProblems compares the schema p of a field with its Go type t.
func fieldProblems(field string, t reflect.Type, p *base.SchemaProxy, answer bool, described map[string]bool) []string {
	s := p.Schema()
	if s == nil {
		return []string{field + ": no schema"}
	}
	want := func(types ...string) []string {
		if slices.Equal(s.Type, types) {
			return nil
		}
		return []string{fmt.Sprintf("%s: type %v, want %v", field, s.Type, types)}
	}
	ref := func(p *base.SchemaProxy, t reflect.Type) []string {
		if !described[t.Name()] {
			return []string{fmt.Sprintf("%s: %s has no schema in contractTypes", field, t.Name())}
		}
		if r := p.GetReference(); r != "#/components/schemas/"+t.Name() {
			return []string{fmt.Sprintf("%s: $ref %q, want #/components/schemas/%s", field, r, t.Name())}
		}
		return nil
	}
	switch {
	case t == reflect.TypeFor[time.Time]():
		if s.Format != "date-time" {
			return append(want("string"), fmt.Sprintf("%s: format %q, want date-time", field, s.Format))
		}
		return want("string")
	case t == reflect.TypeFor[json.RawMessage]():
		// Zoom's objects: geomux sends and requires JSON objects.
		return want("object")
	case t.Kind() == reflect.String:
		return want("string")
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Bool:
		return want("boolean")
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		return ref(p, t.Elem())
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		// An answer's lists may be null: Go encodes a nil slice so, and
		// geomux takes it for none.
		types := []string{"array"}
		if answer {
			types = append(types, "null")
		}
		out := want(types...)
		if s.Items == nil || s.Items.A == nil {
			return append(out, field+": no items")
		}
		return append(out, ref(s.Items.A, t.Elem())...)
	}
	return []string{fmt.Sprintf("%s: Go type %s has no rule here: add one", field, t)}
}

func TestBackendOpenAPIHasTheProtoTypes(t *testing.T) {
	t.Parallel()
	if p := typeProblems(proto.BackendOpenAPI()); len(p) > 0 {
		t.Fatalf("proto/backend.openapi.yaml does not match proto's types:\n%s", strings.Join(p, "\n"))
	}
	for name, doc := range map[string][]byte{
		"renamed":      mutated(t, "        reply_to:\n", "        reply_in:\n"),
		"not required": mutated(t, "required: [id, region, account_id, event, received_at, payload]", "required: [id, region, event, received_at, payload]"),
		"wrong type":   mutated(t, "        is_markdown_support:\n          type: boolean\n          description: Whether", "        is_markdown_support:\n          type: string\n          description: Whether"),
		"no format":    mutated(t, "          format: date-time\n          description: When the access token expires.", "          description: When the access token expires."),
		"wrong ref":    mutated(t, "        unfurl:\n          $ref: \"#/components/schemas/UnfurlTarget\"", "        unfurl:\n          $ref: \"#/components/schemas/UserToken\""),
		"not null":     mutated(t, "        deletes:\n          type: [array, \"null\"]", "        deletes:\n          type: array"),
	} {
		if len(typeProblems(doc)) == 0 {
			t.Errorf("a wrong document (%s) passes", name)
		}
	}
}
