"""The split-safe output filter, shared by the sanitizer and the router.

The sanitizer is the one authority for policy: it compiles each tier's rules and
serves them as data (`SanitizerService.WatchOutputPolicy`, see `wire.py`). The
router rebuilds the same rules from that data and runs `StreamFilter` in its own
process, so output filtering costs no network round trip per piece.

- `text.py`: normalisation, case folding and the injection skeleton;
- `rules.py`: rules and the one-pass matcher;
- `redaction.py`: the built-in secret and PII rules and their named finders;
- `stream.py`: `StreamFilter`, generated text in, text that may be shown out;
- `wire.py`: output policies to protobuf and back, versioned.
"""
