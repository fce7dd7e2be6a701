"""The contracts every part of perpwatch shares and that depend on nothing else of ours.

`events` is the one event model (watcher → pipeline → platform), `sink` is how a watcher hands events
over, `clock` is the one time source, and `backoff` the one retry ladder. `bot`, `watchers` and `storage`
import from here; this package imports none of them, so no import cycle can form through it.
"""
