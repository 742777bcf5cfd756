package httpx

import (
	"encoding/json"
	"net/http"
)

// WriteJSON answers v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v, "") }

// WriteIndentedJSON answers v as JSON indented for people (the admin API,
// read with curl).
func WriteIndentedJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v, "  ") }

func writeJSON(w http.ResponseWriter, status int, v any, indent string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	_ = enc.Encode(v)
}
