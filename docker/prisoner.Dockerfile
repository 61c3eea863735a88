# A Clawrden prisoner: any base image with the shim installed over the tools the agent may
# only use through the warden, and a non-root user `agent` (uid 1000).
#
# Build context: the docker/ directory with docker/bin/clawrden-shim (static) and
# docker/bin/install-clawrden.sh staged (scripts/up.sh does it).
#   BASE_IMAGE   the image to harden (default debian:bookworm-slim; scripts/up.sh passes
#                CLAWRDEN_BASE_IMAGE, on machines without a registry a locally built one)
#   TOOLS        the tools to intercept
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG TOOLS="cat head tail rm env curl wget git npm npx pip pip3"
USER root
COPY bin/clawrden-shim bin/install-clawrden.sh /usr/lib/clawrden-install/
# The user, no setuid/setgid programs (the agent must not become root), the socket mount
# point and the workspace, then the shim over TOOLS.
RUN set -eu; \
    chmod 0700 /usr/lib/clawrden-install; \
    if ! id -u agent >/dev/null 2>&1; then \
        if command -v useradd >/dev/null 2>&1; then \
            useradd --create-home --uid 1000 --user-group --shell /bin/sh agent; \
        else \
            addgroup -g 1000 agent && adduser -D -u 1000 -G agent -s /bin/sh agent; \
        fi; \
    fi; \
    find / -xdev -type f \( -perm -4000 -o -perm -2000 \) -exec chmod u-s,g-s {} +; \
    mkdir -p /run/clawrden /workspace; \
    chown 0:0 /run/clawrden; chmod 0755 /run/clawrden; \
    chown agent:agent /workspace; \
    /bin/sh /usr/lib/clawrden-install/install-clawrden.sh \
        --shim /usr/lib/clawrden-install/clawrden-shim --tools "$TOOLS"
ENV CLAWRDEN_SOCKET=/run/clawrden/warden.sock
USER agent
WORKDIR /workspace
CMD ["sleep", "infinity"]
