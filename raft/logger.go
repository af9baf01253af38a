package raft

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	clog "github.com/chronik-dev/chronik/log"
)

var errClosedLog = clog.ErrClosed

// slogRaftLogger routes etcd raft's logging into slog. Raft's chatty info
// lines go to debug; warnings and errors keep their level.
type slogRaftLogger struct{ l *slog.Logger }

func (s *slogRaftLogger) log(level slog.Level, msg string) {
	s.l.Log(context.Background(), level, msg, "component", "raft")
}

func (s *slogRaftLogger) Debug(v ...interface{}) { s.log(slog.LevelDebug, fmt.Sprint(v...)) }
func (s *slogRaftLogger) Debugf(format string, v ...interface{}) {
	s.log(slog.LevelDebug, fmt.Sprintf(format, v...))
}
func (s *slogRaftLogger) Info(v ...interface{}) { s.log(slog.LevelDebug, fmt.Sprint(v...)) }
func (s *slogRaftLogger) Infof(format string, v ...interface{}) {
	s.log(slog.LevelDebug, fmt.Sprintf(format, v...))
}
func (s *slogRaftLogger) Warning(v ...interface{}) { s.log(slog.LevelWarn, fmt.Sprint(v...)) }
func (s *slogRaftLogger) Warningf(format string, v ...interface{}) {
	s.log(slog.LevelWarn, fmt.Sprintf(format, v...))
}
func (s *slogRaftLogger) Error(v ...interface{}) { s.log(slog.LevelError, fmt.Sprint(v...)) }
func (s *slogRaftLogger) Errorf(format string, v ...interface{}) {
	s.log(slog.LevelError, fmt.Sprintf(format, v...))
}
func (s *slogRaftLogger) Fatal(v ...interface{}) {
	s.log(slog.LevelError, fmt.Sprint(v...))
	os.Exit(1)
}
func (s *slogRaftLogger) Fatalf(format string, v ...interface{}) {
	s.log(slog.LevelError, fmt.Sprintf(format, v...))
	os.Exit(1)
}
func (s *slogRaftLogger) Panic(v ...interface{}) { panic(fmt.Sprint(v...)) }
func (s *slogRaftLogger) Panicf(format string, v ...interface{}) {
	panic(fmt.Sprintf(format, v...))
}
