package proto

import _ "embed" // backendOpenAPI

// backendOpenAPI is backend.openapi.yaml of this package, in the binary.
//
//go:embed backend.openapi.yaml
var backendOpenAPI string

// BackendOpenAPI returns the backend contract as an OpenAPI 3.1 document
// (YAML): the request a region's worker POSTs to backend_url
// (BackendRequest, with HTTPHeaderEventID and HTTPHeaderRegion) and the
// answers it accepts (BackendResponse with 200, or 204). It is
// backend.openapi.yaml of this package; the admin API serves it at
// /admin/v1/openapi/backend.yaml. Each call returns a new copy.
func BackendOpenAPI() []byte { return []byte(backendOpenAPI) }
