package install

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"

	"github.com/geomux/geomux/pkg/config"
)

//go:embed templates/*.html
var templateFS embed.FS

// pages are the install flow's HTML pages, each the layout around a content.
var pages = func() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range []string{"choose", "done", "problem"} {
		out[name] = template.Must(template.ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}()

// view is what every page shows.
type view struct {
	Title   string
	BotName string
	Vendor  string
	Heading string
	// choose
	Action      string
	Button      string
	Regions     []config.Region
	Nonce       string
	Marketplace bool
	// done
	Region config.Region
	// problem
	Message string
	Retry   bool
}

func (h *Handler) render(w http.ResponseWriter, status int, page string, v view) {
	v.BotName, v.Vendor = h.opts.BotName, h.opts.Vendor
	var buf bytes.Buffer
	if err := pages[page].ExecuteTemplate(&buf, "layout", v); err != nil {
		http.Error(w, "page error", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' "+h.opts.OAuthOrigin+"; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (h *Handler) problem(w http.ResponseWriter, status int, heading, msg string, retry bool) {
	h.render(w, status, "problem", view{Title: "Installation problem", Heading: heading, Message: msg, Retry: retry})
}
