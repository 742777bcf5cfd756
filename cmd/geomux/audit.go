package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/geomux/geomux/pkg/audit"
	"github.com/geomux/geomux/pkg/config"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Produce evidence about where data is kept",
	}
	var path string
	var asJSON, sharedOK bool
	locality := &cobra.Command{
		Use:   "locality",
		Short: "Check, by asking NATS, that each region's data lives in that region only",
		Long: `Ask every NATS system of the deployment (the hub's, and each region's own) where
each geomux stream and bucket lives: its cluster, placement tags, replicas,
storage, leader and peers. It fails, naming the offender, if any region's data
is placed or replicated outside its region, if the hub keeps a region's
stream, or if the transit stream (which holds every region's events) is on
disk while regions have NATS systems of their own. Exit status 1 on a finding.

Regions on the hub's NATS system (no regions[].nats.url, as in the
one-process default) are not separated at all: their data shares one store.
The audit says so and exits 3, unless --shared-system-ok says that is
intended (a lab, a demo, a deployment in one jurisdiction).`,
		Example: "  geomux audit locality --config deploy/supercluster/auditor.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path, config.RoleTool)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			names, js, closeAll, err := cliSystems(cfg)
			defer closeAll()
			if err != nil {
				return err
			}
			var systems []audit.System
			for _, name := range names {
				systems = append(systems, audit.System{Name: name, JS: js[name]})
			}
			var shared []string
			for _, r := range cfg.Regions {
				if !r.NATS.Separate() {
					shared = append(shared, r.Name)
				}
			}
			rep, err := audit.Locality(ctx, cfg, systems)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, rep); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SYSTEM\tSTREAM\tOWNER\tSTORAGE\tREPLICAS\tCLUSTER\tLEADER\tPEERS\tTAGS\tVERDICT")
				for _, r := range rep.Rows {
					verdict := "ok"
					if r.Owner == "" {
						verdict = "not geomux's"
					}
					if slices.Contains(shared, r.Owner) {
						verdict = "shared" // a region's, on the hub's system
					}
					if len(r.Problems) > 0 {
						verdict = "MISPLACED"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.System, r.Stream, dash(r.Owner), r.Storage, r.Replicas,
						dash(r.Cluster), dash(r.Leader), dash(strings.Join(r.Peers, ",")), dash(strings.Join(r.Tags, ",")), verdict)
				}
				_ = tw.Flush()
			}
			if !rep.OK() {
				for _, p := range rep.Problems {
					fmt.Fprintln(cmd.ErrOrStderr(), "  "+p)
				}
				return fmt.Errorf("locality audit failed: %d %s (listed above)", len(rep.Problems), plural(len(rep.Problems), "finding", "findings"))
			}
			switch {
			case len(shared) > 0 && !sharedOK:
				return sharedSystemError{fmt.Errorf("locality not separated: %s %s the hub's NATS system, so %s data shares one store; give each region a NATS system of its own (deploy/supercluster), or pass --shared-system-ok if that is intended",
					plural(len(shared), "region", "regions"), strings.Join(shared, ", ")+plural(len(shared), " uses", " use"), plural(len(shared), "its", "their"))}
			case asJSON:
			case len(shared) > 0:
				fmt.Fprintf(out, "locality OK on one shared NATS system (--shared-system-ok): %d streams; %s not separated from the hub\n", len(rep.Rows), plural(len(shared), "region "+shared[0]+" is", "regions "+strings.Join(shared, ", ")+" are"))
			default:
				fmt.Fprintf(out, "locality OK: %d streams on %d NATS %s, each region's data in its region\n", len(rep.Rows), len(systems), plural(len(systems), "system", "systems"))
			}
			return nil
		},
	}
	configFlag(locality, &path)
	locality.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	locality.Flags().BoolVar(&sharedOK, "shared-system-ok", false, "accept regions that share the hub's NATS system (exit 0 rather than 3)")
	cmd.AddCommand(locality)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
