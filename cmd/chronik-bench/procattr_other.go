//go:build !linux

package main

import "syscall"

// procAttr puts a server in its own process group, so a terminal's Ctrl-C
// reaches only the bench, which then cleans up.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
