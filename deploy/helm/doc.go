// Package helm holds the test of the Helm chart in geomux/: helm lint and
// helm template with each site's values of deploy/supercluster/helm, and
// every rendered manifest decoded strictly against the Kubernetes API types.
package helm
