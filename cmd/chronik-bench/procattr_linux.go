package main

import "syscall"

// procAttr puts a server in its own process group, so a terminal's Ctrl-C
// reaches only the bench (which then cleans up), and has the kernel kill it
// if the bench itself dies without cleaning up (kill -9).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
