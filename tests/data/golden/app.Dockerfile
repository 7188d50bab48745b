ARG BASE
FROM ${BASE} AS runtime
COPY . /app/
