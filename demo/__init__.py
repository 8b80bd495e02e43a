"""Demo and load tooling: a synthetic shop, live traffic, the scripted story, the emulator
launcher and the `make up` supervisor. Above the core and the real-time path; nothing below
imports it."""
