package directory

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/admin"
	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/proto"
)

// API is the accounts part of the admin API:
//
//	PUT    /admin/v1/accounts/{accountId}  {"region":"eu"}  set the account's region
//	GET    /admin/v1/accounts/{accountId}                   404 if it has none
//	DELETE /admin/v1/accounts/{accountId}
//	GET    /admin/v1/accounts                               every account
//	GET    /admin/v1/conflicts                              accounts whose pinned app and directory disagree
//	GET    /admin/v1/holds                                  accounts whose replies wait for Zoom's daily limit to reset
//	GET    /admin/v1/accounts/{accountId}/inventory         what every region holds of the account (counts; 502 if one cannot be asked)
//	GET    /admin/v1/parked/without-account                 channels whose events name no account and wait for it (counts)
type API struct {
	dir       *Directory
	conflicts *Conflicts
	holds     *Holds
	inventory *Inventories
	hub       jetstream.JetStream
	regions   []string
	log       *zap.Logger
}

// NewAPI serves dir; a region must be one of regions.
func NewAPI(dir *Directory, regions []string, log *zap.Logger) *API {
	return &API{dir: dir, regions: regions, log: log}
}

// WithConflicts serves the conflicts too.
func (a *API) WithConflicts(c *Conflicts) *API {
	a.conflicts = c
	return a
}

// WithHolds serves the held accounts too.
func (a *API) WithHolds(h *Holds) *API {
	a.holds = h
	return a
}

// WithInventories serves the accounts' inventories too.
func (a *API) WithInventories(i *Inventories) *API {
	a.inventory = i
	return a
}

// Routes are the API's admin routes.
func (a *API) Routes() []admin.Route {
	routes := []admin.Route{
		{Pattern: "PUT /admin/v1/accounts/{accountId}", Handler: http.HandlerFunc(a.put)},
		{Pattern: "GET /admin/v1/accounts/{accountId}", Handler: http.HandlerFunc(a.get)},
		{Pattern: "DELETE /admin/v1/accounts/{accountId}", Handler: http.HandlerFunc(a.delete)},
		{Pattern: "GET /admin/v1/accounts", Handler: http.HandlerFunc(a.list)},
	}
	if a.conflicts != nil {
		routes = append(routes, admin.Route{Pattern: "GET /admin/v1/conflicts", Handler: http.HandlerFunc(a.listConflicts)})
	}
	if a.holds != nil {
		routes = append(routes, admin.Route{Pattern: "GET /admin/v1/holds", Handler: http.HandlerFunc(a.listHolds)})
	}
	if a.inventory != nil {
		routes = append(routes, admin.Route{Pattern: "GET /admin/v1/accounts/{accountId}/inventory", Handler: http.HandlerFunc(a.getInventory)})
	}
	if a.hub != nil {
		routes = append(routes, admin.Route{Pattern: "GET /admin/v1/parked/without-account", Handler: http.HandlerFunc(a.listParkedWithoutAccount)})
	}
	return routes
}

// putBody is what PUT takes.
type putBody struct {
	Region string `json:"region"`
	APIURL string `json:"api_url,omitempty"`
}

func (a *API) accountID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("accountId")
	if !proto.ValidAccountID(id) {
		admin.WriteError(w, http.StatusBadRequest, fmt.Sprintf("%q is not a Zoom account id (letters, digits, '-', '_', '=')", id))
		return "", false
	}
	return id, true
}

func (a *API) put(w http.ResponseWriter, r *http.Request) {
	id, ok := a.accountID(w, r)
	if !ok {
		return
	}
	var b putBody
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		admin.WriteError(w, http.StatusBadRequest, `body must be JSON like {"region":"eu"}: `+err.Error())
		return
	}
	if !slices.Contains(a.regions, b.Region) {
		admin.WriteError(w, http.StatusBadRequest, fmt.Sprintf("region %q is not configured (configured: %s)", b.Region, strings.Join(a.regions, ", ")))
		return
	}
	if b.APIURL != "" {
		if u, err := url.Parse(b.APIURL); err != nil || u.Scheme != "https" || u.Host == "" {
			admin.WriteError(w, http.StatusBadRequest, "api_url must be an https URL such as https://api-eu.zoom.us")
			return
		}
	}
	rec, err := a.dir.Put(r.Context(), proto.AccountRecord{AccountID: id, Region: b.Region, APIURL: b.APIURL})
	if err != nil {
		a.unavailable(w, err)
		return
	}
	a.log.Info("Account region set", logfields.AccountID(id), logfields.Region(b.Region))
	admin.WriteJSON(w, http.StatusOK, rec)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	id, ok := a.accountID(w, r)
	if !ok {
		return
	}
	rec, err := a.dir.Get(r.Context(), id)
	if errors.Is(err, ErrNotFound) {
		admin.WriteError(w, http.StatusNotFound, "account "+id+" has no region")
		return
	}
	if err != nil {
		a.unavailable(w, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, rec)
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	id, ok := a.accountID(w, r)
	if !ok {
		return
	}
	if err := a.dir.Delete(r.Context(), id); err != nil {
		a.unavailable(w, err)
		return
	}
	a.log.Info("Account region removed", logfields.AccountID(id))
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	recs, err := a.dir.List(r.Context())
	if err != nil {
		a.unavailable(w, err)
		return
	}
	if recs == nil {
		recs = []proto.AccountRecord{}
	}
	admin.WriteJSON(w, http.StatusOK, map[string]any{"accounts": recs, "count": len(recs)})
}

func (a *API) listConflicts(w http.ResponseWriter, r *http.Request) {
	cs, err := a.conflicts.List(r.Context())
	if err != nil {
		a.unavailable(w, err)
		return
	}
	if cs == nil {
		cs = []Conflict{}
	}
	admin.WriteJSON(w, http.StatusOK, map[string]any{"conflicts": cs, "count": len(cs)})
}

func (a *API) listHolds(w http.ResponseWriter, r *http.Request) {
	hs, unanswered := a.holds.List(r.Context())
	if hs == nil {
		hs = []Hold{}
	}
	body := map[string]any{"holds": hs, "count": len(hs)}
	if len(unanswered) > 0 {
		body["unanswered"] = unanswered
	}
	admin.WriteJSON(w, http.StatusOK, body)
}

// getInventory answers what every region holds of an account: 200 when
// every region answered, 502 (with what the others said) when one could
// not be asked.
func (a *API) getInventory(w http.ResponseWriter, r *http.Request) {
	id, ok := a.accountID(w, r)
	if !ok {
		return
	}
	inv := a.inventory.Of(r.Context(), id)
	status := http.StatusOK
	if !inv.Complete() {
		status = http.StatusBadGateway
	}
	admin.WriteJSON(w, status, inv)
}

func (a *API) unavailable(w http.ResponseWriter, err error) {
	a.log.Warn("Directory unavailable", zap.Error(err))
	admin.WriteError(w, http.StatusServiceUnavailable, "directory unavailable: "+err.Error())
}
