"""The shared service runtime: settings, server bootstrap, interceptors, metrics, health, logs."""
