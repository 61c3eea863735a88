# The Clawrden warden: two static (musl) binaries and nothing else.
#
# Build context: the docker/ directory after scripts/up.sh (or you) staged the binaries in
# docker/bin/:
#   cargo build --release --target x86_64-unknown-linux-musl -p clawrden-warden -p clawrden-shim
#   cp target/x86_64-unknown-linux-musl/release/clawrden-{warden,shim} docker/bin/
#
# It runs as root: it talks to the Docker socket to run commands back in the prisoner.
# No shell, no libc, no /etc/passwd: `docker compose exec warden clawrden-warden ...` is
# the only way in.
FROM scratch
COPY bin/clawrden-warden /usr/bin/clawrden-warden
COPY bin/clawrden-shim /usr/lib/clawrden/bin/clawrden-shim
COPY warden.yaml /etc/clawrden/warden.yaml
COPY policy.yaml /etc/clawrden/policy.yaml
ENV PATH=/usr/bin
EXPOSE 8080
VOLUME ["/var/lib/clawrden"]
ENTRYPOINT ["/usr/bin/clawrden-warden"]
CMD ["--config", "/etc/clawrden/warden.yaml"]
