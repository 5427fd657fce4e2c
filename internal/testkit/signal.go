package testkit

import "syscall"

// terminate is what Stop sends: what an orchestrator sends before a kill.
var terminate = syscall.SIGTERM
