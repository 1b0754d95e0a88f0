// Command healthserver stands in for a control-plane component in the
// containerd rig: it serves /healthz, /livez and /readyz over HTTPS with the
// certificate given in the component's own flags (--tls-cert-file as the
// apiserver, --cert-file as etcd), loaded once at start like the real
// components' embedded credentials, so only a restart makes it serve a
// renewed certificate.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
)

func main() {
	fs := flag.NewFlagSet("healthserver", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8443", "listen address")
	cert := fs.String("tls-cert-file", "", "serving certificate")
	key := fs.String("tls-private-key-file", "", "serving key")
	etcdCert := fs.String("cert-file", "", "serving certificate (etcd style)")
	etcdKey := fs.String("key-file", "", "serving key (etcd style)")
	kubeconfig := fs.String("kubeconfig", "", "read once at start, like the real components")
	_ = fs.String("listen-client-urls", "", "etcd style; --addr is what is served")
	fail := fs.Bool("fail", false, "never become healthy")
	_ = fs.Parse(os.Args[1:])
	if *kubeconfig != "" {
		if _, err := os.ReadFile(*kubeconfig); err != nil {
			log.Fatal(err)
		}
	}
	if *etcdCert != "" {
		*cert, *key = *etcdCert, *etcdKey
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if *fail {
			http.Error(w, "unhealthy", http.StatusInternalServerError)
			return
		}
		for _, p := range []string{"/healthz", "/livez", "/readyz"} {
			if strings.HasPrefix(r.URL.Path, p) {
				fmt.Fprint(w, "ok")
				return
			}
		}
		http.NotFound(w, r)
	})
	srv := &http.Server{Addr: *addr, Handler: mux}
	log.Printf("listening on %s", *addr)
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatal(err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}}
		log.Fatal(srv.ListenAndServeTLS("", ""))
	}
	log.Fatal(srv.ListenAndServe())
}
