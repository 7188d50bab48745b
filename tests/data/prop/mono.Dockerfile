FROM scratch AS early
COPY base/ /early/

FROM scratch AS final
ARG SVC=app
COPY ${SVC}/sub/ /mono/sub/
COPY s*/*.txt /mono/glob/

FROM scratch AS later
COPY app/ /later/
