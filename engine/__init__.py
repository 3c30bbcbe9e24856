"""Gridloop's engine: specs, runtime, storage, clock, events, timers and org.

Plain Python with no Flask import. Every use case takes a SQLAlchemy session and reads time from an
injected clock.
"""
