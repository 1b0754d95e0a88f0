package cluster

import (
	"fmt"
	"slices"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	if c.Name != "" {
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

// RBAC is the Role and RoleBinding of each namespace pkirenewd needs.
type RBAC struct {
	Roles    []rbacv1.Role
	Bindings []rbacv1.RoleBinding
}

// Objects is the narrowest RBAC that allows every needed call for lease:
// in each namespace one Role (one rule per resource and name, verbs
// merged) bound to IdentityGroup.
func Objects(lease string) RBAC {
	var out RBAC
	byNS := map[string]int{}
	for _, c := range Needed(lease) {
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
				Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: IdentityGroup}},
			})
		}
		addRule(&out.Roles[i], c)
	}
	return out
}

func objectMeta(ns string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: RBACName, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/name": "pkirenewd"}}
}

// addRule merges c into r: its verb joins the rule of the same resource
// and name, else a new rule.
func addRule(r *rbacv1.Role, c Call) {
	var names []string
	if c.Name != "" {
		names = []string{c.Name}
	}
	for i := range r.Rules {
		pr := &r.Rules[i]
		if pr.APIGroups[0] == c.Group && pr.Resources[0] == c.Resource && slices.Equal(pr.ResourceNames, names) {
			if !slices.Contains(pr.Verbs, c.Verb) {
				pr.Verbs = append(pr.Verbs, c.Verb)
			}
			return
		}
	}
	r.Rules = append(r.Rules, rbacv1.PolicyRule{APIGroups: []string{c.Group}, Resources: []string{c.Resource}, ResourceNames: names, Verbs: []string{c.Verb}})
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
	var docs []any
	for i := range o.Roles {
		docs = append(docs, o.Roles[i], o.Bindings[i])
	}
	for _, d := range docs {
		y, err := yaml.Marshal(d)
		if err != nil {
			panic(err) // plain structs
		}
		b.WriteString("---\n")
		b.WriteString(strings.ReplaceAll(string(y), "  creationTimestamp: null\n", ""))
	}
	return b.String()
}
