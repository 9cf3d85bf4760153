// Package policies decides each tool call from CEL rules over the call, its
// arguments and the session's history.
//
// The reference for policy authors (file format, variables, functions,
// combination, tests) is README.md in this folder.
package policies
