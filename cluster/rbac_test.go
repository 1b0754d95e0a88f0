package cluster_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/pkirenewd/pkirenewd/cluster"
)

const testLease = "kube-system/pkirenewd"

// The shipped manifest is the table's: packaging/rbac.yaml is what
// `pkirenewd rbac` prints for the default lease.
func TestShippedManifestIsTheTable(t *testing.T) {
	data, err := os.ReadFile("../packaging/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), cluster.Manifest(testLease); got != want {
		t.Fatalf("packaging/rbac.yaml differs from the table (go run ./cmd/pkirenewd rbac --config /dev/null > packaging/rbac.yaml):\n%s", want)
	}
}

// rbacAPI is a kube-apiserver with an RBAC authorizer of Roles and
// RoleBindings to groups, on the wire: the Lease, Events, access reviews
// and the RBAC objects. The own identity (User-Agent pkirenewd) belongs
// to cluster.IdentityGroup; the bootstrap's (pkirenewd-bootstrap) is
// admin and may do anything. Every request is recorded as a Call.
type rbacAPI struct {
	mu         sync.Mutex
	roles      map[string]rbacv1.Role // namespace/name
	bindings   map[string]rbacv1.RoleBinding
	lease      []byte
	configMaps map[string][]byte
	// clusterRoles and clusterBindings by name.
	clusterRoles    map[string]rbacv1.ClusterRole
	clusterBindings map[string]rbacv1.ClusterRoleBinding
	calls           []cluster.Call
	denied          []cluster.Call
	admin           []cluster.Call
}

func newRBACAPI(seed *cluster.RBAC) *rbacAPI {
	a := &rbacAPI{roles: map[string]rbacv1.Role{}, bindings: map[string]rbacv1.RoleBinding{}, configMaps: map[string][]byte{},
		clusterRoles: map[string]rbacv1.ClusterRole{}, clusterBindings: map[string]rbacv1.ClusterRoleBinding{}}
	if seed != nil && seed.ClusterRole != nil {
		a.clusterRoles[seed.ClusterRole.Name] = *seed.ClusterRole
		a.clusterBindings[seed.ClusterBinding.Name] = *seed.ClusterBinding
	}
	if seed != nil {
		for _, r := range seed.Roles {
			a.roles[r.Namespace+"/"+r.Name] = r
		}
		for _, b := range seed.Bindings {
			a.bindings[b.Namespace+"/"+b.Name] = b
		}
	}
	return a
}

// callOf reads the Kubernetes verb and resource of a request.
func callOf(r *http.Request) cluster.Call {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var c cluster.Call
	switch {
	case len(parts) >= 3 && parts[0] == "apis":
		c.Group, parts = parts[1], parts[3:]
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	}
	if len(parts) >= 2 && parts[0] == "namespaces" {
		c.Namespace, parts = parts[1], parts[2:]
	}
	if len(parts) > 0 {
		c.Resource = parts[0]
	}
	if len(parts) > 1 {
		c.Name = parts[1]
	}
	c.Verb = map[string]string{http.MethodGet: "get", http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete"}[r.Method]
	if c.Verb == "get" && c.Name == "" {
		c.Verb = "list"
	}
	return c
}

func grants(rules []rbacv1.PolicyRule, c cluster.Call) bool {
	for _, pr := range rules {
		if slices.Contains(pr.APIGroups, c.Group) && slices.Contains(pr.Resources, c.Resource) && slices.Contains(pr.Verbs, c.Verb) &&
			(len(pr.ResourceNames) == 0 || slices.Contains(pr.ResourceNames, c.Name)) {
			return true
		}
	}
	return false
}

func toGroup(subjects []rbacv1.Subject) bool {
	return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool { return s.Kind == "Group" && s.Name == cluster.IdentityGroup })
}

// allowed is the RBAC authorizer for the own identity's group.
func (a *rbacAPI) allowed(c cluster.Call) bool {
	if c.Resource == "selfsubjectaccessreviews" {
		return true // system:basic-user
	}
	for _, b := range a.clusterBindings {
		if toGroup(b.Subjects) && grants(a.clusterRoles[b.RoleRef.Name].Rules, c) {
			return true
		}
	}
	for _, b := range a.bindings {
		if b.Namespace == c.Namespace && toGroup(b.Subjects) && grants(a.roles[b.Namespace+"/"+b.RoleRef.Name].Rules, c) {
			return true
		}
	}
	return false
}

func (a *rbacAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	c := callOf(r)
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if b, ok := v.([]byte); ok {
			_, _ = w.Write(b)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}
	status := func(code int, reason string) {
		reply(code, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code,
			"message": fmt.Sprintf("%s: %s", reason, c)})
	}
	if r.Header.Get("User-Agent") == "pkirenewd-bootstrap" {
		a.admin = append(a.admin, c)
	} else {
		a.calls = append(a.calls, c)
		if !a.allowed(c) {
			a.denied = append(a.denied, c)
			status(http.StatusForbidden, "Forbidden")
			return
		}
	}
	switch c.Resource {
	case "selfsubjectaccessreviews":
		var review map[string]any
		_ = json.Unmarshal(body, &review)
		attrs := review["spec"].(map[string]any)["resourceAttributes"].(map[string]any)
		s := func(k string) string { v, _ := attrs[k].(string); return v }
		asked := cluster.Call{Verb: s("verb"), Group: s("group"), Resource: s("resource"), Namespace: s("namespace"), Name: s("name")}
		review["status"] = map[string]any{"allowed": a.allowed(asked)}
		reply(http.StatusCreated, review)
	case "roles", "rolebindings", "clusterroles", "clusterrolebindings":
		a.rbacObject(c, body, reply, status)
	case "nodes":
		reply(http.StatusOK, map[string]any{"kind": "NodeList", "apiVersion": "v1", "items": []any{}})
	case "leases":
		switch {
		case c.Verb == "get" && a.lease == nil:
			status(http.StatusNotFound, "NotFound")
		case c.Verb == "get":
			reply(http.StatusOK, a.lease)
		case c.Verb == "create":
			a.lease = body
			reply(http.StatusCreated, body)
		case c.Verb == "update":
			a.lease = body
			reply(http.StatusOK, body)
		default:
			status(http.StatusMethodNotAllowed, "MethodNotAllowed")
		}
	case "events":
		reply(http.StatusCreated, body)
	case "configmaps":
		key := c.Namespace + "/" + c.Name
		cm, ok := a.configMaps[key]
		switch {
		case !ok:
			status(http.StatusNotFound, "NotFound")
		case c.Verb == "get":
			reply(http.StatusOK, cm)
		case c.Verb == "update":
			a.configMaps[key] = body
			reply(http.StatusOK, body)
		default:
			status(http.StatusMethodNotAllowed, "MethodNotAllowed")
		}
	default:
		status(http.StatusNotFound, "NotFound")
	}
}

func (a *rbacAPI) rbacObject(c cluster.Call, body []byte, reply func(int, any), status func(int, string)) {
	var meta struct {
		Metadata struct{ Name string }
	}
	_ = json.Unmarshal(body, &meta)
	name := c.Name
	if c.Verb == "create" {
		name = meta.Metadata.Name
	}
	key := c.Namespace + "/" + name
	var found bool
	switch c.Resource {
	case "roles":
		_, found = a.roles[key]
	case "rolebindings":
		_, found = a.bindings[key]
	case "clusterroles":
		_, found = a.clusterRoles[name]
	case "clusterrolebindings":
		_, found = a.clusterBindings[name]
	}
	switch {
	case c.Verb == "get" && found:
		reply(http.StatusOK, map[string]any{"metadata": map[string]any{"name": name}})
	case c.Verb == "get":
		status(http.StatusNotFound, "NotFound")
	case c.Verb == "create" && found:
		status(http.StatusConflict, "AlreadyExists")
	case c.Verb == "create":
		a.store(c.Resource, key, name, body)
		reply(http.StatusCreated, body)
	default:
		status(http.StatusMethodNotAllowed, "MethodNotAllowed")
	}
}

func (a *rbacAPI) store(resource, key, name string, body []byte) {
	switch resource {
	case "roles":
		var r rbacv1.Role
		_ = json.Unmarshal(body, &r)
		a.roles[key] = r
	case "rolebindings":
		var b rbacv1.RoleBinding
		_ = json.Unmarshal(body, &b)
		a.bindings[key] = b
	case "clusterroles":
		var r rbacv1.ClusterRole
		_ = json.Unmarshal(body, &r)
		a.clusterRoles[name] = r
	case "clusterrolebindings":
		var b rbacv1.ClusterRoleBinding
		_ = json.Unmarshal(body, &b)
		a.clusterBindings[name] = b
	}
}

// serve runs api and writes a kubeconfig that reaches it (the
// credentials do not matter to it: the User-Agent tells who asks).
func serve(t *testing.T, api http.Handler) (kubeconfig, server string) {
	t.Helper()
	srv := httptest.NewTLSServer(api)
	t.Cleanup(srv.Close)
	ca := base64.StdEncoding.EncodeToString(pemCert(srv.Certificate().Raw))
	kc := filepath.Join(t.TempDir(), "pkirenewd.conf")
	conf := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- cluster: {certificate-authority-data: %s, server: %s}
  name: kubernetes
contexts:
- context: {cluster: kubernetes, user: u}
  name: u@kubernetes
current-context: u@kubernetes
users:
- name: u
  user: {token: not-a-secret}
`, ca, srv.URL)
	if err := os.WriteFile(kc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return kc, srv.URL
}

func shippedRBAC(t *testing.T) *cluster.RBAC {
	t.Helper()
	data, err := os.ReadFile("../packaging/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out cluster.RBAC
	for _, doc := range strings.Split(string(data), "\n---\n")[1:] {
		var kind struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &kind); err != nil {
			t.Fatal(err)
		}
		switch kind.Kind {
		case "Role":
			var r rbacv1.Role
			unmarshal(t, doc, &r)
			out.Roles = append(out.Roles, r)
		case "RoleBinding":
			var b rbacv1.RoleBinding
			unmarshal(t, doc, &b)
			out.Bindings = append(out.Bindings, b)
		case "ClusterRole":
			out.ClusterRole = &rbacv1.ClusterRole{}
			unmarshal(t, doc, out.ClusterRole)
		case "ClusterRoleBinding":
			out.ClusterBinding = &rbacv1.ClusterRoleBinding{}
			unmarshal(t, doc, out.ClusterBinding)
		default:
			t.Fatalf("rbac.yaml: unexpected %q", kind.Kind)
		}
	}
	return &out
}

func unmarshal(t *testing.T, doc string, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
		t.Fatal(err)
	}
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// Everything pkirenewd does through the API, as its own identity, against
// an RBAC authorizer that holds the shipped manifest: the access check,
// the lease taken (created, then taken over), renewed and released,
// Events, and the CA board read and a renewed CA published. Nothing is refused, and every rule of the manifest was needed by
// some call: a new call without a rule fails here, and so does a rule no
// call needs.
func TestShippedManifestGrantsExactlyWhatTheCodeCalls(t *testing.T) {
	api := newRBACAPI(shippedRBAC(t))
	oldCA, caKey := ca(t)
	info, _ := json.Marshal(clusterInfo(oldCA))
	api.configMaps["kube-public/cluster-info"] = info
	kc, srv := serve(t, api)
	own := cluster.LeaseConfig{Kubeconfig: kc, Server: srv, Lease: testLease, Identity: "node1", Duration: time.Minute, Timeout: 5 * time.Second}
	access := &cluster.Access{Own: own, Admin: own, Lease: testLease, Log: quietLog()}
	c := &cluster.Coordinator{
		NewLease:  func() (*cluster.Lease, error) { return cluster.NewLease(own, clock.RealClock{}) },
		LeaseName: testLease, Access: access, Wait: 5 * time.Second, Retry: 10 * time.Millisecond,
	}
	ctx := context.Background()
	for range 2 { // created, then taken again from its released record
		h, err := c.Acquire(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		h.Release(ctx)
	}
	l, _ := cluster.NewLease(own, clock.RealClock{})
	if ok, _, err := l.TryAcquire(ctx); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := l.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	events := own
	events.LocalOnly = true
	sink := &cluster.EventSink{Config: events, Node: "node1", Access: access}
	sink.Event("CertificatesRenewed", "Renew", "renewed", false)
	sink.Flush(10 * time.Second)
	board, err := cluster.NewCABoard(own)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := board.Published(ctx); err != nil {
		t.Fatal(err)
	}
	if err := board.Publish(ctx, "ca", renewed(t, oldCA, caKey, 2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := board.WorkerCAs(ctx, "pkirenewd.io/ca"); err != nil {
		t.Fatal(err)
	}

	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.denied) > 0 || len(api.admin) > 0 {
		t.Fatalf("refused: %v; made with admin.conf: %v", api.denied, api.admin)
	}
	used := map[cluster.Call]bool{}
	for _, call := range api.calls {
		used[call] = true
	}
	table := map[cluster.Call]bool{}
	for _, f := range cluster.Features(testLease) {
		for _, call := range f.Calls {
			table[call] = true
		}
	}
	for call := range used {
		if !table[call] {
			t.Errorf("the code made %s, which no feature of cluster.Features lists", call)
		}
	}
	shipped := shippedRBAC(t)
	type scoped struct {
		ns    string
		rules []rbacv1.PolicyRule
	}
	var all []scoped
	for _, r := range shipped.Roles {
		all = append(all, scoped{r.Namespace, r.Rules})
	}
	if shipped.ClusterRole != nil {
		all = append(all, scoped{"", shipped.ClusterRole.Rules})
	}
	for _, r := range all {
		for _, pr := range r.rules {
			names := pr.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, v := range pr.Verbs {
				for _, n := range names {
					call := cluster.Call{Verb: v, Group: pr.APIGroups[0], Resource: pr.Resources[0], Namespace: r.ns, Name: n}
					if !used[call] {
						t.Errorf("the manifest grants %s, which no call needed", call)
					}
				}
			}
		}
	}
	t.Logf("%d requests, %d kinds of call, all granted by packaging/rbac.yaml", len(api.calls), len(used))
}

// The bootstrap: with the RBAC missing, the first contact creates the
// Role and RoleBinding once with admin.conf, says so at Warning and in an
// Event, and from then on only the own identity talks. Forbidden, or
// faced with RBAC that exists and does not grant, it names what is
// refused and the manifest, and creates nothing.
func TestAccessBootstrap(t *testing.T) {
	ctx := context.Background()
	setup := func(seed *cluster.RBAC, bootstrap bool) (*rbacAPI, *cluster.Access, *bytes.Buffer, *[]string) {
		api := newRBACAPI(seed)
		kc, srv := serve(t, api)
		own := cluster.LeaseConfig{Kubeconfig: kc, Server: srv, Lease: testLease, Identity: "node1", Timeout: 5 * time.Second}
		var logs bytes.Buffer
		l := logrus.New()
		l.SetOutput(&logs)
		var events []string
		a := &cluster.Access{Own: own, Admin: own, Lease: testLease, Bootstrap: bootstrap, Log: l,
			Event: func(reason, _, note string, warning bool) {
				events = append(events, fmt.Sprint(reason, " ", warning, " ", note))
			}}
		return api, a, &logs, &events
	}

	api, a, logs, events := setup(nil, true)
	for range 3 {
		if err := a.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var creates []string
	for _, c := range api.admin {
		if c.Verb == "create" {
			creates = append(creates, c.Namespace+"/"+c.Resource)
		}
	}
	objects := cluster.Objects(testLease)
	var want []string
	for _, r := range objects.Roles {
		want = append(want, r.Namespace+"/roles", r.Namespace+"/rolebindings")
	}
	if objects.ClusterRole != nil {
		want = append(want, "/clusterroles", "/clusterrolebindings")
	}
	if !slices.Equal(creates, want) || len(api.admin) != 2*len(want) {
		t.Errorf("bootstrap made %v with admin.conf, want one get and one create of each of %v", api.admin, want)
	}
	if len(*events) != 1 || !strings.Contains((*events)[0], "RBACBootstrapped true") || !strings.Contains(logs.String(), "level=warning") {
		t.Errorf("bootstrap not said: events %v, log %s", *events, logs.String())
	}
	if n, want := len(api.calls), 2*len(cluster.Needed(testLease)); n != want { // reviews refused, then granted; then cached
		t.Errorf("%d access reviews, want %d: %v", n, want, api.calls)
	}

	api, a, _, _ = setup(nil, false)
	err := a.Ensure(ctx)
	var fe *cluster.ForbiddenError
	if !errors.As(err, &fe) || len(fe.Refused) != len(cluster.Needed(testLease)) || len(api.admin) != 0 {
		t.Fatalf("bootstrap forbidden: %v (admin calls %v)", err, api.admin)
	}
	for _, want := range []string{"system:pkirenewd:node1", "update on leases.coordination.k8s.io kube-system/pkirenewd", "apiIdentityBootstrap is false", "kind: RoleBinding"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}

	// A Role that grants less (an older manifest applied by hand) is not
	// touched.
	narrow := cluster.Objects(testLease)
	narrow.Roles[0].Rules = narrow.Roles[0].Rules[:1]
	api, a, _, _ = setup(&narrow, true)
	err = a.Ensure(ctx)
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "exist but do not grant") || slices.ContainsFunc(api.admin, func(c cluster.Call) bool { return c.Verb != "get" }) {
		t.Fatalf("narrow RBAC: %v (admin calls %v)", err, api.admin)
	}
}

// A lease refused by RBAC is a named error at once, not a wait: which
// verb on which resource, and the manifest.
func TestLeaseRefusedIsNamedAtOnce(t *testing.T) {
	api := newRBACAPI(nil)
	kc, srv := serve(t, api)
	own := cluster.LeaseConfig{Kubeconfig: kc, Server: srv, Lease: testLease, Identity: "node1", Duration: time.Minute, Timeout: 5 * time.Second}
	c := &cluster.Coordinator{
		NewLease:  func() (*cluster.Lease, error) { return cluster.NewLease(own, clock.RealClock{}) },
		LeaseName: testLease, Access: &cluster.Access{Own: own, Admin: own, Lease: testLease, Log: quietLog()}, Wait: time.Hour,
	}
	_, err := c.Acquire(context.Background(), false)
	var fe *cluster.ForbiddenError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "restart lease kube-system/pkirenewd") || !strings.Contains(err.Error(), "get on leases.coordination.k8s.io kube-system/pkirenewd") {
		t.Fatalf("%v", err)
	}
}
