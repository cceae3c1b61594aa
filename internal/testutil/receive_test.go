package testutil

import "testing"

func TestReceive(t *testing.T) {
	values := make(chan int, 1)
	go func() { values <- 7 }()
	if got := Receive(t, "a value", values); got != 7 {
		t.Errorf("Receive = %d, want 7", got)
	}
	done := make(chan struct{})
	go close(done)
	Receive(t, "the close", done)
	closed := make(chan error)
	close(closed)
	if err := Receive(t, "a closed channel", closed); err != nil {
		t.Errorf("Receive from a closed channel = %v, want the zero value", err)
	}
}
