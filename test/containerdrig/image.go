package containerdrig

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// ImportImage builds an OCI image layout with one uncompressed layer
// holding the given files (path in the image -> file on the host, mode 0755),
// /tmp (1777) and a minimal /etc/passwd, /etc/group and /etc/nsswitch.conf,
// with PATH=/usr/local/bin:... and the given entrypoint (may be nil), and
// imports it into the CRI namespace with `ctr images import`, unpacked for
// the rig's snapshotter. ref must be fully qualified (registry/name:tag), as
// the CRI normalises image names.
func (r *Rig) ImportImage(ref string, files map[string]string, entrypoint []string) {
	r.t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	dirs := map[string]bool{}
	addDir := func(d string, mode int64) {
		if d == "/" || d == "." || dirs[d] {
			return
		}
		dirs[d] = true
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: mode})
	}
	write := func(p string, data []byte, mode int64) {
		var parents []string
		for d := filepath.Dir(p); d != "/" && d != "."; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			addDir(d, 0o755)
		}
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: mode, Size: int64(len(data))})
		_, _ = tw.Write(data)
	}
	addDir("/tmp", 0o1777)
	write("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), 0o644)
	write("/etc/group", []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	write("/etc/nsswitch.conf", []byte("hosts: files dns\n"), 0o644)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths) // same files, same digests
	for _, p := range paths {
		data, err := os.ReadFile(files[p])
		if err != nil {
			r.fail("containerdrig: image %s: %v", ref, err)
		}
		write(p, data, 0o755)
	}
	if err := tw.Close(); err != nil {
		r.fail("containerdrig: image %s: %v", ref, err)
	}
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		d := sha256.Sum256(b)
		h := hex.EncodeToString(d[:])
		blobs[h] = b
		return "sha256:" + h, len(b)
	}
	layerDigest, layerSize := put(layer.Bytes())
	cfg, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{
			"Env":        []string{"PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"Entrypoint": entrypoint,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	cfgDigest, cfgSize := put(cfg)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": cfgSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	mDigest, mSize := put(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mDigest, "size": mSize,
			"platform":    map[string]string{"architecture": runtime.GOARCH, "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref},
		}},
	})
	var archive bytes.Buffer
	aw := tar.NewWriter(&archive)
	add := func(name string, data []byte) {
		_ = aw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		_, _ = aw.Write(data)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	hashes := make([]string, 0, len(blobs))
	for h := range blobs {
		hashes = append(hashes, h)
	}
	sort.Strings(hashes)
	for _, h := range hashes {
		add("blobs/sha256/"+h, blobs[h])
	}
	if err := aw.Close(); err != nil {
		r.fail("containerdrig: image %s: %v", ref, err)
	}
	tarPath := filepath.Join(r.Dir, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
	if err := os.WriteFile(tarPath, archive.Bytes(), 0o600); err != nil {
		r.fail("containerdrig: image %s: %v", ref, err)
	}
	if out, err := exec.Command("ctr", "-a", r.sock, "-n", criNamespace, "images", "import",
		"--platform", "linux/"+runtime.GOARCH, "--snapshotter", r.snapshotter, tarPath).CombinedOutput(); err != nil {
		r.fail("ctr import %s: %v\n%s", ref, err, out)
	}
}
