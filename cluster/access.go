package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
)

// The access reviews and RBAC objects only, like the Lease's scheme.
var (
	accessScheme = runtime.NewScheme()
	accessCodecs = serializer.NewCodecFactory(accessScheme)
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{authorizationv1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(accessScheme); err != nil {
			panic(err)
		}
	}
	metav1.AddToGroupVersion(accessScheme, authorizationv1.SchemeGroupVersion)
	metav1.AddToGroupVersion(accessScheme, rbacv1.SchemeGroupVersion)
}

// ForbiddenError is the API refusing pkirenewd's own identity what it
// needs: which verbs on which resources, why pkirenewd did not create the
// RBAC itself, and the manifest that grants it. pkirenewd never falls
// back to admin.conf for it.
type ForbiddenError struct {
	User    string
	Refused []Call
	// Why the RBAC was not bootstrapped (empty: not asked yet).
	Why      string
	Manifest string
	// Err is the API's answer when a call was refused (nil: found by an
	// access review before any call).
	Err error
}

func (e *ForbiddenError) Error() string {
	var calls []string
	for _, c := range e.Refused {
		calls = append(calls, c.String())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "RBAC: the API refuses %s (group %s): %s", e.User, IdentityGroup, strings.Join(calls, "; "))
	if e.Err != nil {
		fmt.Fprintf(&b, " (%v)", e.Err)
	}
	if e.Why != "" {
		b.WriteString("; " + e.Why)
	}
	if e.Manifest != "" {
		fmt.Fprintf(&b, "; apply this manifest (pkirenewd rbac | kubectl apply -f -):\n%s", e.Manifest)
	}
	return b.String()
}

// Unwrap is the API's answer, so the failover takes it as an answer.
func (e *ForbiddenError) Unwrap() error { return e.Err }

// refused wraps the API's 403 for call as a ForbiddenError (the caller's
// Access completes it); other errors pass unchanged.
func refused(err error, call Call) error {
	if apierrors.IsForbidden(err) {
		return &ForbiddenError{Refused: []Call{call}, Err: err}
	}
	return err
}

// Access makes sure pkirenewd's own identity may make its calls before it
// needs to: on first contact it asks the API (access reviews, as itself)
// and, when the RBAC is missing and Bootstrap allows, creates the Role and
// RoleBinding once with admin.conf, says so at Warning and in an Event.
// From then on only the own identity talks to the API.
type Access struct {
	// Own reaches the API as pkirenewd.conf; Admin as admin.conf, for
	// the bootstrap only.
	Own, Admin LeaseConfig
	// Lease is "namespace/name", for the table of calls.
	Lease     string
	Bootstrap bool
	Log       logrus.FieldLogger
	// Event posts an Event (nil: none).
	Event func(reason, action, note string, warning bool)
	Clock clock.Clock

	mu sync.Mutex
	// granted: every call was allowed when last asked.
	granted bool
	// bootstrapped: the bootstrap ran (it runs once per process).
	bootstrapped bool
}

// Ensure returns nil once every needed call is allowed, asking the API
// (and bootstrapping) only until it is; a *ForbiddenError when it is not;
// another error when the API could not be asked.
func (a *Access) Ensure(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.granted {
		return nil
	}
	missing, err := a.Missing(ctx)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		a.granted = true
		return nil
	}
	switch {
	case !a.Bootstrap:
		return a.forbidden(missing, "apiIdentityBootstrap is false", nil)
	case a.bootstrapped:
		return a.forbidden(missing, "pkirenewd bootstrapped its RBAC once already and creates only what is missing, never changes what exists", nil)
	}
	created, err := a.bootstrap(ctx)
	if err != nil {
		return fmt.Errorf("creating pkirenewd's RBAC with admin.conf: %w", err)
	}
	a.bootstrapped = true
	if len(created) == 0 {
		// Another node may have made them a moment ago: the authorizer
		// sees new objects through a watch, so wait for it as after our
		// own bootstrap before saying they do not grant it.
		if a.settle(ctx) == nil {
			return nil
		}
		return a.forbidden(missing, "the Roles and RoleBindings "+RBACName+" exist but do not grant it (pkirenewd creates missing ones only, never changes them)", nil)
	}
	msg := fmt.Sprintf("created %s with admin.conf, once: pkirenewd talks to the API as %s from now on", strings.Join(created, ", "), a.user())
	a.Log.WithFields(logrus.Fields{"ACTION": "rbac-bootstrap"}).Warn(msg)
	if a.Event != nil {
		a.Event("RBACBootstrapped", "Bootstrap", msg, true)
	}
	return a.settle(ctx)
}

// settle waits a little for the authorizer to see the new objects (the
// RBAC authorizer is fed by a watch).
func (a *Access) settle(ctx context.Context) error {
	clk := a.clock()
	for i := 0; ; i++ {
		missing, err := a.Missing(ctx)
		if err == nil && len(missing) == 0 {
			a.granted = true
			return nil
		}
		if i == 20 {
			if err != nil {
				return err
			}
			return a.forbidden(missing, "the Role and RoleBinding were just created and still do not grant it", nil)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-clk.After(250 * time.Millisecond):
		}
	}
}

func (a *Access) clock() clock.Clock {
	if a.Clock == nil {
		return clock.RealClock{}
	}
	return a.Clock
}

func (a *Access) user() string { return IdentityUser(a.Own.Identity) }

func (a *Access) forbidden(missing []Call, why string, err error) *ForbiddenError {
	return &ForbiddenError{User: a.user(), Refused: missing, Why: why, Manifest: Manifest(a.Lease), Err: err}
}

// Refused completes a ForbiddenError of a call and forgets that access
// was granted: RBAC changed since, and the next Ensure asks again.
func (a *Access) Refused(fe *ForbiddenError) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.granted = false
	fe.User, fe.Manifest = a.user(), Manifest(a.Lease)
	if !a.Bootstrap {
		fe.Why = "apiIdentityBootstrap is false"
	}
}

// Missing asks the API, as the own identity, which needed calls it may
// not make (a SelfSubjectAccessReview each: every authenticated user may
// ask that).
func (a *Access) Missing(ctx context.Context) ([]Call, error) {
	clients, err := restClients(a.Own, authorizationv1.SchemeGroupVersion, accessCodecs)
	if err != nil {
		return nil, err
	}
	var missing []Call
	for _, call := range Needed(a.Lease) {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: call.Namespace, Verb: call.Verb, Group: call.Group, Resource: call.Resource, Name: call.Name,
			},
		}}
		out := &authorizationv1.SelfSubjectAccessReview{}
		err := firstAnswer(clients, func(c rest.Interface) error {
			return c.Post().Resource("selfsubjectaccessreviews").Body(review).Do(ctx).Into(out)
		})
		if err != nil {
			return nil, fmt.Errorf("asking the API what %s may do: %w", a.user(), err)
		}
		if !out.Status.Allowed {
			missing = append(missing, call)
		}
	}
	return missing, nil
}

// bootstrap creates, with admin.conf, whichever of the Roles and
// RoleBindings is missing, and names what it created. Another node
// creating one at the same moment is no error.
func (a *Access) bootstrap(ctx context.Context) ([]string, error) {
	admin := a.Admin
	admin.UserAgent = "pkirenewd-bootstrap"
	clients, err := restClients(admin, rbacv1.SchemeGroupVersion, accessCodecs)
	if err != nil {
		return nil, err
	}
	var created []string
	for _, obj := range Objects(a.Lease).objects() {
		err := firstAnswer(clients, func(c rest.Interface) error {
			return obj.in(c.Get()).Resource(obj.resource).Name(RBACName).Do(ctx).Error()
		})
		if err == nil {
			continue
		}
		if !apierrors.IsNotFound(err) {
			return created, err
		}
		err = firstAnswer(clients, func(c rest.Interface) error {
			return obj.in(c.Post()).Resource(obj.resource).Body(obj.body).Do(ctx).Error()
		})
		if apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			return created, err
		}
		created = append(created, obj.String())
	}
	return created, nil
}
