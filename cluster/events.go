package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
)

// Events only: like the Lease's, a scheme of its own keeps client-go from
// registering every API group.
var (
	eventScheme = runtime.NewScheme()
	eventCodecs = serializer.NewCodecFactory(eventScheme)
)

func init() {
	if err := eventsv1.AddToScheme(eventScheme); err != nil {
		panic(err)
	}
	metav1.AddToGroupVersion(eventScheme, eventsv1.SchemeGroupVersion)
}

// EventSink posts events.k8s.io/v1 Events about this node in kube-system,
// so that every control-plane node's renewals, restarts and failures show
// in `kubectl get events -n kube-system`. Posting never blocks the caller
// and never fails a renewal: events queue (a bounded queue; when full they
// are dropped and counted), a token bucket limits them like client-go's
// event broadcaster does, and a failed post is logged at debug only — the
// journal is the record, Events are a convenience.
type EventSink struct {
	// Config says how to reach the API (admin.conf, the local apiserver
	// first), as for the Lease; read again for each post, since a
	// renewal may just have replaced admin.conf.
	Config LeaseConfig
	// Node is the node the events regard.
	Node string
	// Clock stamps the events and times Flush (default: the real clock).
	Clock clock.Clock
	// Debug logs a failed post.
	Debug func(format string, args ...any)
	// Access, when set, makes sure the identity of Config may post
	// (pkirenewd's own: see Access) before the first post.
	Access *Access

	once    sync.Once
	queue   chan *eventsv1.Event
	limiter *rate.Limiter
	mu      sync.Mutex
	dropped int
	pending int // queued or being posted
	wg      sync.WaitGroup
}

// A burst of 25, as client-go's event spam filter allows, refilled one per
// 10 s: a renewal round makes a handful at once and then nothing for months,
// while a node failing every 30 s must not flood the API.
const (
	eventBurst  = 25
	eventRefill = 10 * time.Second
	eventQueue  = 100
)

func (s *EventSink) start() {
	s.once.Do(func() {
		if s.Clock == nil {
			s.Clock = clock.RealClock{}
		}
		s.queue = make(chan *eventsv1.Event, eventQueue)
		s.limiter = rate.NewLimiter(rate.Every(eventRefill), eventBurst)
		s.wg.Add(1)
		go s.loop()
	})
}

// Event queues one Event; it returns at once.
func (s *EventSink) Event(reason, action, note string, warning bool) {
	if s == nil {
		return
	}
	s.start()
	typ := corev1.EventTypeNormal
	if warning {
		typ = corev1.EventTypeWarning
	}
	now := s.Clock.Now()
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.pkirenewd.%x", s.Node, now.UnixNano()), Namespace: metav1.NamespaceSystem},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: "pkirenewd",
		ReportingInstance:   "pkirenewd-" + s.Node,
		Action:              action,
		Reason:              reason,
		Regarding:           corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: s.Node},
		Note:                truncate(note, 1024),
		Type:                typ,
	}
	if !s.limiter.Allow() {
		s.drop()
		return
	}
	s.mu.Lock()
	s.pending++
	s.mu.Unlock()
	select {
	case s.queue <- ev:
	default:
		s.mu.Lock()
		s.pending--
		s.mu.Unlock()
		s.drop()
	}
}

func (s *EventSink) drop() {
	s.mu.Lock()
	s.dropped++
	s.mu.Unlock()
}

// Dropped counts the events not posted (rate limit or a full queue).
func (s *EventSink) Dropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Flush waits up to d for every queued event to be posted (or to fail):
// a one-shot command calls it before it exits.
func (s *EventSink) Flush(d time.Duration) {
	if s == nil || s.queue == nil {
		return
	}
	clk := s.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	for deadline := clk.Now().Add(d); clk.Now().Before(deadline); <-clk.After(20 * time.Millisecond) {
		s.mu.Lock()
		n := s.pending
		s.mu.Unlock()
		if n == 0 {
			return
		}
	}
}

func (s *EventSink) loop() {
	defer s.wg.Done()
	for ev := range s.queue {
		if err := s.post(ev); err != nil && s.Debug != nil {
			s.Debug("event %s not posted: %v", ev.Reason, err)
		}
		s.mu.Lock()
		s.pending--
		s.mu.Unlock()
	}
}

func (s *EventSink) post(ev *eventsv1.Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.Access != nil {
		if err := s.Access.Ensure(ctx); err != nil {
			return err
		}
	}
	clients, err := restClients(s.Config, eventsv1.SchemeGroupVersion, eventCodecs)
	if err != nil {
		return err
	}
	err = firstAnswer(clients, func(c rest.Interface) error {
		return c.Post().Namespace(ev.Namespace).Resource("events").Body(ev).Do(ctx).Error()
	})
	var fe *ForbiddenError
	if err = refused(err, Call{Verb: "create", Group: eventsv1.GroupName, Resource: "events", Namespace: ev.Namespace}); errors.As(err, &fe) && s.Access != nil {
		s.Access.Refused(fe)
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
