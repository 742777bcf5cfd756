package config

import "fmt"

// Target is what one geomux process runs (geomux run --target).
type Target struct {
	// Name is all, ingress, router or worker.
	Name string
	// Region restricts a worker target to one region; empty means every
	// configured region.
	Region string
}

// Target names.
const (
	TargetAll     = "all"
	TargetIngress = "ingress"
	TargetRouter  = "router"
	TargetWorker  = "worker"
)

// Roles are the roles the target runs.
func (t Target) Roles() []Role {
	switch t.Name {
	case TargetIngress:
		return []Role{RoleIngress}
	case TargetRouter:
		return []Role{RoleRouter}
	case TargetWorker:
		return []Role{RoleWorker}
	}
	return AllRoles
}

// Has reports whether the target runs role r.
func (t Target) Has(r Role) bool {
	for _, x := range t.Roles() {
		if x == r {
			return true
		}
	}
	return false
}

// Validate reports an unknown target name, or a region given to a target
// that runs no worker.
func (t Target) Validate() error {
	switch t.Name {
	case TargetAll, TargetIngress, TargetRouter, TargetWorker:
	default:
		return fmt.Errorf("--target %q is not one of all, ingress, router, worker", t.Name)
	}
	if t.Region != "" && !t.Has(RoleWorker) {
		return fmt.Errorf("--region applies to --target worker (or all), not %s", t.Name)
	}
	return nil
}

// Check is Validate, and also reports a region that c does not configure.
func (t Target) Check(c Config) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if t.Region == "" {
		return nil
	}
	if _, ok := c.Region(t.Region); !ok {
		return fmt.Errorf("--region %q is not configured (regions: %v)", t.Region, c.RegionNames())
	}
	return nil
}

// WorkerRegions are the regions whose workers the target runs.
func (t Target) WorkerRegions(c Config) []Region {
	if !t.Has(RoleWorker) {
		return nil
	}
	if t.Region != "" {
		r, _ := c.Region(t.Region)
		return []Region{r}
	}
	return c.Regions
}
