# syntax=docker/dockerfile:1
# Build stage: compile the TypeScript and keep only production dependencies.
FROM node:26-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY bench ./bench
RUN npm ci --no-audit --no-fund && npm prune --omit=dev --no-audit --no-fund

# Runtime stage: the compiled proxy, its production dependencies, and the example config.
FROM node:26-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY package.json ./
COPY config ./config
# Mount your config here: docker run -v ./limpet.yaml:/etc/limpet/limpet.yaml:ro ...
# (set admin.listen to 0.0.0.0:9090 in it for the admin port to be reachable from outside the container)
VOLUME ["/etc/limpet"]
EXPOSE 8080 9090
USER node
# --no-memory-reducer: see src/runtime/runtime-flags.ts
ENTRYPOINT ["node", "--no-memory-reducer", "dist/src/cli.js"]
CMD ["--config", "/etc/limpet/limpet.yaml"]
