package amqp

// CrashForTest ends the listener as if its process died.
func (l *Listener) CrashForTest() { l.crash() }
