"""Pure decision logic: taxonomy, tagger (keywords and learned model), priority model,
routing rules, skill groups.

Imports no other package of omniroute and does no I/O beyond reading its configuration
files. Its inputs are its own types (:mod:`skills.vocabulary`); the Redis side (queues,
relaxation) is the router's.

The package itself imports nothing: the message contracts in ``router`` build on
:mod:`skills.vocabulary` and :mod:`skills.exceptions`, and an adapter that imports them
must not load the tagger, its automaton and OpenCC. Import the modules
(``skills.tagger``, ``skills.config``, ...) directly.
"""
