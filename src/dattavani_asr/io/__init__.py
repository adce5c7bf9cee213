"""The edges of the flow: input sources and transcript sinks (local, http, s3/gs, Drive), writers, retries."""
