package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the benchmark's flags.
type options struct {
	geomux, natsServer, out string
	step, soak              time.Duration
	soakRate                float64
	rates, scaleRates       rateList
	skipScale               bool
	profile                 string
	profileRate             float64
	phases                  phaseSet
	rounds                  int
	// The realistic-load phases' rates and lengths.
	slowRate, realisticRate float64
	slowFor, realisticFor   time.Duration
	// The overload phase's: 0 is twice the highest sustained e2e rate.
	overloadRate float64
	overloadFor  time.Duration
	// neighbourCores is how many cores the neighbour phase's busy loops
	// take.
	neighbourCores int
	// memoryLimit is geomux's memory_limit in the overload runs.
	memoryLimit string
}

// The phases of a run, in order: the instant profile's, then the
// realistic-load ones (realistic.go).
var allPhases = []string{"saturation", "e2e", "sync", "soak", "overload", "neighbour", "scaling", "scale-out", "slow", "burst", "pacing", "realistic"}

// phaseSet is the phases to run (--phases).
type phaseSet map[string]bool

func (p *phaseSet) String() string {
	var s []string
	for _, ph := range allPhases {
		if (*p)[ph] {
			s = append(s, ph)
		}
	}
	return strings.Join(s, ",")
}

func (p *phaseSet) Set(v string) error {
	*p = phaseSet{}
	for _, ph := range strings.Split(v, ",") {
		ph = strings.TrimSpace(ph)
		if !slices.Contains(allPhases, ph) {
			return fmt.Errorf("%q is not a phase (%s)", ph, strings.Join(allPhases, ", "))
		}
		(*p)[ph] = true
	}
	return nil
}

func (o *options) defaults() {
	if len(o.rates) == 0 {
		o.rates = rateList{1000, 2000, 3000, 4000, 6000, 8000}
	}
	if o.phases == nil {
		o.phases = phaseSet{}
		for _, ph := range allPhases {
			o.phases[ph] = true
		}
	}
	if o.skipScale {
		delete(o.phases, "scale-out")
	}
	if len(o.scaleRates) == 0 {
		o.scaleRates = rateList{1000, 2000, 3000}
	}
}

// check reports the first flag that cannot work, saying what to do.
func (o *options) check() error {
	if _, err := os.Stat(o.geomux); err != nil {
		return fmt.Errorf("--geomux %s: %v (run make build, or make bench)", o.geomux, err)
	}
	if o.phases["scale-out"] {
		if _, err := os.Stat(o.natsServer); err != nil {
			return fmt.Errorf("--nats-server %s: %v (make bench builds it; or pass --skip-scale-out)", o.natsServer, err)
		}
	}
	if o.step < 500*time.Millisecond {
		return fmt.Errorf("--step %s: at least 500ms", o.step)
	}
	if o.rounds < 1 {
		return fmt.Errorf("--rounds %d: at least 1", o.rounds)
	}
	if o.soak < 0 || o.soakRate < 0 {
		return fmt.Errorf("--soak and --soak-rate cannot be negative")
	}
	if o.overloadRate < 0 || o.overloadFor <= 0 {
		return fmt.Errorf("--overload-rate cannot be negative, and --overload-for must be positive")
	}
	if o.neighbourCores < 1 {
		return fmt.Errorf("--neighbour-cores %d: at least 1", o.neighbourCores)
	}
	if o.slowRate <= 0 || o.realisticRate <= 0 {
		return fmt.Errorf("--slow-rate and --realistic-rate must be positive")
	}
	if o.slowFor <= slowWarm {
		return fmt.Errorf("--slow-for %s: more than %s (the warm-up it leaves out)", o.slowFor, slowWarm)
	}
	if o.realisticFor <= realisticWarm {
		return fmt.Errorf("--realistic-for %s: more than %s (the warm-up it leaves out)", o.realisticFor, realisticWarm)
	}
	return nil
}

// rateList is a comma-separated list of rates (events per second).
type rateList []float64

func (r *rateList) String() string {
	var s []string
	for _, v := range *r {
		s = append(s, strconv.FormatFloat(v, 'f', -1, 64))
	}
	return strings.Join(s, ",")
}

func (r *rateList) Set(v string) error {
	*r = nil
	for _, f := range strings.Split(v, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || x <= 0 {
			return fmt.Errorf("%q is not a positive rate", f)
		}
		*r = append(*r, x)
	}
	return nil
}
