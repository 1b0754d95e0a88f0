package store

// failpoint is called at every step of a transaction, including in the
// middle of writing a file. Release builds leave it nil; a build with the
// "failpoints" tag sets it to kill the process at a chosen step (see
// failpoint_on.go), to prove crash consistency with a real SIGKILL.
var failpoint func(step string)

func hit(step string) {
	if failpoint != nil {
		failpoint(step)
	}
}

// Failpoint marks a step of the orchestration around a transaction (the
// record of owed restarts, each restart) for the same failpoints build.
func Failpoint(step string) { hit(step) }
