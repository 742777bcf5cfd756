package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// buildGeomux builds a static geomux stamped with version.
func buildGeomux(t *testing.T, version string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "geomux")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+version, "-o", bin, "github.com/geomux/geomux/cmd/geomux")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func testSpec(t *testing.T) Spec {
	t.Helper()
	certs := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(certs, []byte("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Spec{Binary: buildGeomux(t, "9.8.7-test"), CACerts: certs, ZoneInfo: goZoneInfo(),
		Version: "9.8.7-test", Revision: "0123abcd", Source: "https://example.com/geomux", Arch: "amd64"}
}

func TestImageRunsGeomuxAsNonRoot(t *testing.T) {
	s := testSpec(t)
	out := filepath.Join(t.TempDir(), "geomux-image.tar")
	digest, err := Write(s, out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatalf("read back %s: %v", out, err)
	}
	if id, _ := img.ConfigName(); id != digest {
		t.Errorf("archive holds image %s, Write said %s", id, digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if strings.Join(c.Entrypoint, " ") != "/geomux" || c.User != "65532:65532" || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("entrypoint %q, user %q, platform %s/%s", c.Entrypoint, c.User, cf.OS, cf.Architecture)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.source":   "https://example.com/geomux",
		"org.opencontainers.image.version":  "9.8.7-test",
		"org.opencontainers.image.revision": "0123abcd",
	} {
		if got := c.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}

	// The files, as a container runtime would unpack them.
	files := map[string]*tar.Header{}
	dir := t.TempDir()
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, filepath.FromSlash(h.Name))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, os.FileMode(h.Mode)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, f := range []string{"geomux", "etc/ssl/certs/ca-certificates.crt", "usr/share/zoneinfo.zip", "etc/passwd", "etc/group"} {
		if files[f] == nil {
			t.Errorf("the image lacks /%s", f)
		}
	}
	if h := files["var/lib/geomux"]; h == nil || h.Typeflag != tar.TypeDir || h.Uid != 65532 {
		t.Errorf("/var/lib/geomux: %+v, want a directory owned by 65532", h)
	}
	if passwd, _ := os.ReadFile(filepath.Join(dir, "etc/passwd")); !bytes.Contains(passwd, []byte("nonroot:x:65532:65532:")) {
		t.Errorf("/etc/passwd has no nonroot user:\n%s", passwd)
	}
	got, err := exec.Command(filepath.Join(dir, "geomux"), "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "geomux 9.8.7-test" {
		t.Errorf("the image's geomux version: %q %v", got, err)
	}
	// Zones from the image's database, as the container's Go runtime
	// finds them (ZONEINFO).
	if !strings.Contains(strings.Join(c.Env, " "), "ZONEINFO=/usr/share/zoneinfo.zip") {
		t.Errorf("env %q lacks ZONEINFO", c.Env)
	}
}

func TestImageIsReproducible(t *testing.T) {
	s := testSpec(t)
	a, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.ConfigName()
	db, _ := b.ConfigName()
	if da != db {
		t.Errorf("two builds of the same inputs: %s and %s", da, db)
	}
}

func TestImageCLIErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--binary", filepath.Join(t.TempDir(), "missing")}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "missing: no such file") {
		t.Errorf("missing binary: exit %d, %q", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"extra"}, &stdout, &stderr); code != 2 || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("extra argument: exit %d, %q", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"--source-date-epoch", "yesterday"}, &stdout, &stderr); code != 2 {
		t.Errorf("bad epoch: exit %d, %q", code, stderr.String())
	}
}
