package platformfx

import (
	"net/http"
	"strconv"

	"github.com/geomux/geomux/pkg/admin"
	"github.com/geomux/geomux/proto"
)

// BackendOpenAPIPath is where the admin API serves the backend contract's
// OpenAPI document (proto.BackendOpenAPI).
const BackendOpenAPIPath = "/admin/v1/openapi/backend.yaml"

// OpenAPIRoutes serves the backend contract's OpenAPI document, as
// application/yaml, at BackendOpenAPIPath, behind the admin token like
// every admin route. Module provides it: every process serves it, whatever
// its roles.
func OpenAPIRoutes() []admin.Route {
	doc := proto.BackendOpenAPI()
	size := strconv.Itoa(len(doc))
	return []admin.Route{{
		Pattern: http.MethodGet + " " + BackendOpenAPIPath,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/yaml")
			w.Header().Set("Content-Length", size)
			_, _ = w.Write(doc)
		}),
	}}
}
