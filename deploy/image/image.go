package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec is what goes into the image.
type Spec struct {
	// Binary is the static geomux binary; CACerts a PEM bundle; ZoneInfo
	// Go's zoneinfo.zip.
	Binary, CACerts, ZoneInfo string
	// Version tags the image; Revision and Source are its labels.
	Version, Revision, Source string
	// Arch is the binary's GOARCH.
	Arch string
	// Created is the image's creation time and every file's (reproducible:
	// the Unix epoch unless SOURCE_DATE_EPOCH says otherwise).
	Created time.Time
}

// The image's user (distroless's "nonroot") and where things are.
const (
	uid, gid     = 65532, 65532
	binaryPath   = "geomux"
	zoneInfoPath = "usr/share/zoneinfo.zip"
	caCertsPath  = "etc/ssl/certs/ca-certificates.crt"
	// dataDir is a directory the user owns, for nats.store_dir of an
	// embedded server (mount a volume there).
	dataDir = "var/lib/geomux"
)

// Write builds the image and writes it to out as a `docker load`-able
// archive; it returns the image's id (its config's digest, what `docker
// images` shows).
func Write(s Spec, out string) (v1.Hash, error) {
	img, err := Build(s)
	if err != nil {
		return v1.Hash{}, err
	}
	tag, err := name.NewTag("geomux:" + s.Version)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("--version %q is not an image tag: %w", s.Version, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return v1.Hash{}, err
	}
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		return v1.Hash{}, fmt.Errorf("write %s: %w", out, err)
	}
	return img.ConfigName()
}

// Build assembles the image: one layer of files on an empty base.
func Build(s Spec) (v1.Image, error) {
	if s.Created.IsZero() {
		s.Created = time.Unix(0, 0).UTC()
	}
	files := []struct {
		src, dst string
		mode     int64
	}{
		{s.Binary, binaryPath, 0o755},
		{s.CACerts, caCertsPath, 0o644},
		{s.ZoneInfo, zoneInfoPath, 0o644},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(h *tar.Header) error {
		h.ModTime, h.Format = s.Created, tar.FormatPAX
		return tw.WriteHeader(h)
	}
	dirs := []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "tmp/", "usr/", "usr/share/", "var/", "var/lib/"}
	for _, d := range dirs {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode}); err != nil {
			return nil, err
		}
	}
	if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: dataDir + "/", Mode: 0o700, Uid: uid, Gid: gid}); err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: f.dst, Mode: f.mode, Size: int64(len(b))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct{ name, body string }{
		{"etc/passwd", fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", uid, gid)},
		{"etc/group", fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", gid)},
	} {
		if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.body))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = s.Arch, "linux", v1.Time{Time: s.Created}
	cf.Config = v1.Config{
		Entrypoint:   []string{"/" + binaryPath},
		Cmd:          []string{"run", "--config", "/etc/geomux/geomux.yaml"},
		User:         fmt.Sprintf("%d:%d", uid, gid),
		WorkingDir:   "/" + dataDir,
		Env:          []string{"ZONEINFO=/" + zoneInfoPath},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}, "8081/tcp": {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "geomux",
			"org.opencontainers.image.description": "One Zoom Team Chat chatbot, every customer's data in its own region",
			"org.opencontainers.image.source":      s.Source,
			"org.opencontainers.image.version":     s.Version,
			"org.opencontainers.image.revision":    s.Revision,
			"org.opencontainers.image.created":     s.Created.Format(time.RFC3339),
		},
	}
	cf.History = []v1.History{{Created: v1.Time{Time: s.Created}, CreatedBy: "geomux deploy/image", Comment: "geomux " + s.Version}}
	return mutate.ConfigFile(img, cf)
}

// goZoneInfo is the time zone database of the Go toolchain on PATH ("" if
// there is none: --zoneinfo is then required).
func goZoneInfo() string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return ""
	}
	return filepath.Join(strings.TrimSpace(string(out)), "lib", "time", "zoneinfo.zip")
}
