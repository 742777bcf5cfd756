package workers

import (
	"context"
	"errors"
	"sync"
)

// Fleet is the workers of the regions one process runs.
type Fleet []*Worker

// Start starts each region's worker in turn; when one fails, those started
// before it are stopped again.
func (f Fleet) Start(ctx context.Context) error {
	for i, w := range f {
		if err := w.Start(ctx); err != nil {
			for _, s := range f[:i] {
				_ = s.Stop(ctx)
			}
			return err
		}
	}
	return nil
}

// Stop drains every region at once: a stop takes as long as the slowest
// region, not the sum of them.
func (f Fleet) Stop(ctx context.Context) error {
	errs := make([]error, len(f))
	var wg sync.WaitGroup
	for i, w := range f {
		wg.Go(func() { errs[i] = w.Stop(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
