// Command image writes geomux's OCI image as a `docker load`-able archive,
// from a static geomux binary, with no container daemon and no network
// (make image): the binary, CA certificates and Go's time zone database,
// run as a non-root user, with OCI labels. The same inputs give the same
// image, byte for byte.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var s Spec
	var out, epoch string
	fs.StringVar(&s.Binary, "binary", "bin/geomux", "the static geomux binary (make build)")
	fs.StringVar(&s.CACerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "the CA certificates bundle to ship")
	fs.StringVar(&s.ZoneInfo, "zoneinfo", "", "Go's time zone database (default: $(go env GOROOT)/lib/time/zoneinfo.zip of the toolchain running this)")
	fs.StringVar(&s.Version, "version", "dev", "the version: the image's tag and label")
	fs.StringVar(&s.Revision, "revision", "", "the source revision (git commit) for the label")
	fs.StringVar(&s.Source, "source", "https://github.com/geomux/geomux", "the source repository for the label")
	fs.StringVar(&s.Arch, "arch", "amd64", "the binary's architecture")
	fs.StringVar(&out, "out", "bin/geomux-image.tar", "where the archive is written")
	fs.StringVar(&epoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "the image's creation time and every file's, in seconds since 1970 (default 0, or SOURCE_DATE_EPOCH)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "image: unexpected argument %q (flags only; see -h)\n", fs.Arg(0))
		return 2
	}
	if epoch != "" {
		var secs int64
		if _, err := fmt.Sscan(epoch, &secs); err != nil || secs < 0 {
			fmt.Fprintf(stderr, "image: --source-date-epoch %q: want seconds since 1970\n", epoch)
			return 2
		}
		s.Created = time.Unix(secs, 0).UTC()
	}
	if s.ZoneInfo == "" {
		s.ZoneInfo = goZoneInfo()
	}
	digest, err := Write(s, out)
	if err != nil {
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s: geomux:%s, image id %s (docker load -i %s)\n", out, s.Version, digest, out)
	return 0
}
