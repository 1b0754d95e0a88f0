package cluster

import (
	"fmt"
	"slices"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// pkirenewd's own API identity. Every control-plane node issues itself a
// client certificate from its local cluster CA (no shared secret) with
// this group as its O, so that one RoleBinding serves all nodes.
const (
	IdentityGroup = "system:pkirenewd"
	// RBACName names the Role and the RoleBinding.
	RBACName = "pkirenewd"
)

// IdentityUser is the user (CN) of node's own identity.
func IdentityUser(node string) string { return "system:pkirenewd:" + node }

// Call is one kind of request pkirenewd makes of the API: a verb on a
// resource in a namespace, of one named object or (Name empty) of any.
type Call struct {
	Verb, Group, Resource, Namespace, Name string
}

func (c Call) String() string {
	where := "in " + c.Namespace
	switch {
	case c.Namespace == "":
		where = "(cluster-wide)"
	case c.Name != "":
		where = c.Namespace + "/" + c.Name
	}
	res := c.Resource
	if c.Group != "" {
		res += "." + c.Group
	}
	return fmt.Sprintf("%s on %s %s", c.Verb, res, where)
}

// Feature is one thing pkirenewd does through the API and every call it
// makes for it. A new call is added here, with its feature, or the test of
// the shipped manifest against what the code calls fails.
type Feature struct {
	Name  string
	Calls []Call
	// Default: every authenticated user may make these calls already
	// (system:basic-user); the manifest grants nothing for them.
	Default bool
}

// Features is the table of pkirenewd's API calls for the lease
// "namespace/name".
func Features(lease string) []Feature {
	ns, name, err := SplitLease(lease)
	if err != nil {
		return nil
	}
	const coord, leases = "coordination.k8s.io", "leases"
	return []Feature{
		{Name: "restart lease", Calls: []Call{
			// RBAC cannot restrict create by name: create is on any
			// Lease of the namespace, the rest on this one only.
			{Verb: "create", Group: coord, Resource: leases, Namespace: ns},
			{Verb: "get", Group: coord, Resource: leases, Namespace: ns, Name: name},
			{Verb: "update", Group: coord, Resource: leases, Namespace: ns, Name: name},
		}},
		// Each Event is a new object (never a patch of a series).
		{Name: "events", Calls: []Call{
			{Verb: "create", Group: "events.k8s.io", Resource: "events", Namespace: metav1.NamespaceSystem},
		}},
		// A renewed CA, told to the other nodes (the restart Lease's
		// annotations: its calls above) and to the workers: cluster-info,
		// only ever updated, never made.
		{Name: "CA board", Calls: []Call{
			{Verb: "get", Resource: "configmaps", Namespace: ClusterInfoNamespace, Name: ClusterInfoName},
			{Verb: "update", Resource: "configmaps", Namespace: ClusterInfoNamespace, Name: ClusterInfoName},
			// check: what each worker reported of its CA (an annotation).
			{Verb: "list", Resource: "nodes"},
		}},
		// How pkirenewd learns what it may do, before it needs it.
		{Name: "access review", Default: true, Calls: []Call{
			{Verb: "create", Group: "authorization.k8s.io", Resource: "selfsubjectaccessreviews"},
		}},
	}
}

// Needed is every call of the features the manifest must grant.
func Needed(lease string) []Call {
	var out []Call
	for _, f := range Features(lease) {
		if !f.Default {
			out = append(out, f.Calls...)
		}
	}
	return out
}

// RBAC is the Role and RoleBinding of each namespace pkirenewd needs,
// and the ClusterRole and its binding for what is cluster-wide.
type RBAC struct {
	Roles    []rbacv1.Role
	Bindings []rbacv1.RoleBinding
	// ClusterRole holds the rules of cluster-scoped calls (nil: none).
	ClusterRole    *rbacv1.ClusterRole
	ClusterBinding *rbacv1.ClusterRoleBinding
}

// Objects is the narrowest RBAC that allows every needed call for lease:
// in each namespace one Role (one rule per resource and name, verbs
// merged) bound to IdentityGroup; a ClusterRole for cluster-scoped calls.
func Objects(lease string) RBAC {
	var out RBAC
	byNS := map[string]int{}
	for _, c := range Needed(lease) {
		if c.Namespace == "" {
			out.addClusterRule(c)
			continue
		}
		i, ok := byNS[c.Namespace]
		if !ok {
			i = len(out.Roles)
			byNS[c.Namespace] = i
			out.Roles = append(out.Roles, rbacv1.Role{
				TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
				ObjectMeta: objectMeta(c.Namespace),
			})
			out.Bindings = append(out.Bindings, rbacv1.RoleBinding{
				TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
				ObjectMeta: objectMeta(c.Namespace),
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: RBACName},
				Subjects:   subjects(),
			})
		}
		out.Roles[i].Rules = addRule(out.Roles[i].Rules, c)
	}
	return out
}

func subjects() []rbacv1.Subject {
	return []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: IdentityGroup}}
}

func (o *RBAC) addClusterRule(c Call) {
	if o.ClusterRole == nil {
		meta := objectMeta("")
		o.ClusterRole = &rbacv1.ClusterRole{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"}, ObjectMeta: meta}
		o.ClusterBinding = &rbacv1.ClusterRoleBinding{
			TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"}, ObjectMeta: meta,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: RBACName}, Subjects: subjects(),
		}
	}
	o.ClusterRole.Rules = addRule(o.ClusterRole.Rules, c)
}

// rbacObject is one object of the RBAC, as the API names it.
type rbacObject struct {
	resource, kind, namespace string
	body                      any
}

func (o rbacObject) String() string {
	if o.namespace == "" {
		return o.kind + " " + RBACName
	}
	return fmt.Sprintf("%s %s/%s", o.kind, o.namespace, RBACName)
}

// in scopes a request to the object's namespace (none: cluster-scoped).
func (o rbacObject) in(r *rest.Request) *rest.Request {
	if o.namespace == "" {
		return r
	}
	return r.Namespace(o.namespace)
}

// objects lists them in the order they are applied: each Role before its
// binding.
func (o RBAC) objects() []rbacObject {
	var out []rbacObject
	for i := range o.Roles {
		out = append(out, rbacObject{"roles", "Role", o.Roles[i].Namespace, &o.Roles[i]},
			rbacObject{"rolebindings", "RoleBinding", o.Bindings[i].Namespace, &o.Bindings[i]})
	}
	if o.ClusterRole != nil {
		out = append(out, rbacObject{"clusterroles", "ClusterRole", "", o.ClusterRole},
			rbacObject{"clusterrolebindings", "ClusterRoleBinding", "", o.ClusterBinding})
	}
	return out
}

func objectMeta(ns string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: RBACName, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/name": "pkirenewd"}}
}

// addRule merges c into rules: its verb joins the rule of the same
// resource and name, else a new rule.
func addRule(rules []rbacv1.PolicyRule, c Call) []rbacv1.PolicyRule {
	var names []string
	if c.Name != "" {
		names = []string{c.Name}
	}
	for i := range rules {
		pr := &rules[i]
		if pr.APIGroups[0] == c.Group && pr.Resources[0] == c.Resource && slices.Equal(pr.ResourceNames, names) {
			if !slices.Contains(pr.Verbs, c.Verb) {
				pr.Verbs = append(pr.Verbs, c.Verb)
			}
			return rules
		}
	}
	return append(rules, rbacv1.PolicyRule{APIGroups: []string{c.Group}, Resources: []string{c.Resource}, ResourceNames: names, Verbs: []string{c.Verb}})
}

// Manifest is Objects as YAML for kubectl apply: what packaging ships
// (for the default lease), what check and a refused call print (for the
// configured one).
func Manifest(lease string) string {
	o := Objects(lease)
	var b strings.Builder
	fmt.Fprintf(&b, `# pkirenewd's own API identity (apiIdentity: own). Every control-plane
# node's pkirenewd authenticates as %s
# in the group %s, with a client certificate it issues
# itself from the cluster CA, and may do this and nothing else.
# For the lease %s (made by 'pkirenewd rbac').
`, IdentityUser("<node>"), IdentityGroup, lease)
	for _, d := range o.objects() {
		y, err := yaml.Marshal(d.body)
		if err != nil {
			panic(err) // plain structs
		}
		b.WriteString("---\n")
		b.WriteString(strings.ReplaceAll(string(y), "  creationTimestamp: null\n", ""))
	}
	return b.String()
}
