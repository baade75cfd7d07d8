"""Building an image from untrusted source: buildah and the sandbox it runs
in, the checks on uploaded tarballs and repository URLs, git's environment,
the recipe of a tree without a Dockerfile, and build logs as rows. The build
activities (`activities/builder.py`) put these together."""
