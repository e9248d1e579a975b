# multigres-op image: FROM scratch, the static musl binary and a numeric
# non-root user. Nothing else: no shell, no libc, no CA bundle (the operator
# verifies the API server against the service-account CA it is given).
#
#   make image    builds build/static/multigres-op, then this image with
#                 docker; without a Docker engine it assembles exactly these
#                 files into build/image-root and runs the binary there in a
#                 chroot as 65532:65532 (scripts/image.sh).
#
# The build context is limited by .dockerignore to the two paths copied here.
FROM scratch
COPY build/static/multigres-op /multigres-op
COPY image/etc/passwd image/etc/group /etc/
USER 65532:65532
ENTRYPOINT ["/multigres-op"]
