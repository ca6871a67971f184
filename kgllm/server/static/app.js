// The kgllm page. It asks, shows the answer with its evidence, and explores the graph: find an entity,
// open a node (its facts, with the provenance of derived ones, and its neighbours), filter edges by
// relation, and review predicted or extracted facts (accept or reject). It draws what the API returns
// (/ask, /search, /entity, /neighbors, /review) and holds no graph logic of its own. The answer
// streams in as it is written (#answer[data-streaming]); checked claims are marked
// (span.claim[data-status]) and citations [n] link to the n-th evidence item (a.citation[data-citation]).
//
// Page state for people and tests: <body data-state> is "busy" while a request runs, then "ready"
// (or "error", with the message in #status); <body data-revision> counts finished actions.
(function () {
  "use strict";

  const COLORS = { question: "#2563eb", answer: "#16a34a", other: "#94a3b8" };
  const ROLE_ORDER = { question: 0, answer: 1, other: 2 };
  const NODE_FONT = 14;
  const EDGE_FONT = 11;
  const READABLE_ZOOM = 0.9; // below this, labels get too small: zoom stays here and the graph pans
  const LARGEST_ZOOM = 1.6;
  const LABEL_GAP = 6; // pixels (graph units) kept between the boxes of two node labels
  const NEIGHBOURS = 40; // facts fetched when a node is opened
  const LABELLED_EDGES = 20; // above this, only the open node's edges keep their relation label
  const $ = (id) => document.getElementById(id);

  const cy = cytoscape({
    container: $("graph"),
    minZoom: 0.1,
    maxZoom: 4,
    style: [
      { selector: "node", style: {
          "background-color": (n) => COLORS[n.data("role")] || COLORS.other,
          "label": "data(label)", "font-size": NODE_FONT, "text-valign": "bottom", "text-margin-y": 4,
          "width": 20, "height": 20, "color": "#1d2433", "text-wrap": "wrap", "text-max-width": 120,
          "text-background-color": "#fbfcfe", "text-background-opacity": 0.85, "text-background-padding": 1 } },
      { selector: "node[role = 'question'], node[role = 'answer']", style: { "width": 28, "height": 28, "font-weight": "bold" } },
      { selector: "edge", style: {
          "curve-style": "bezier", "target-arrow-shape": "triangle", "width": 1.5,
          "line-color": "#9aa5b8", "target-arrow-color": "#9aa5b8",
          "label": "data(label)", "font-size": EDGE_FONT, "color": "#0e7490", "text-rotation": "autorotate",
          "min-zoomed-font-size": 8, "text-background-color": "#fbfcfe", "text-background-opacity": 1 } },
      { selector: "edge[?derived]", style: { "line-style": "dashed" } },
      { selector: "edge.quiet", style: { "label": "" } },
      { selector: ".filtered", style: { "display": "none" } },
      { selector: "node.selected", style: { "border-width": 3, "border-color": "#1d2433" } },
      { selector: "node.expanding", style: { "border-width": 3, "border-color": "#f59e0b" } },
    ],
  });

  const view = { pending: 0, failed: false, revision: 0, selected: null, hiddenRelations: new Set(), rejected: 0 };

  // ------------------------------------------------------------------ requests and page state

  function headers() {
    const key = $("api-key").value.trim();
    const base = { "Content-Type": "application/json" };
    if (key) { localStorage.setItem("kgllm-api-key", key); base.Authorization = "Bearer " + key; }
    return base;
  }

  async function call(path, options) {
    const response = await fetch(path, Object.assign({ headers: headers() }, options || {}));
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error((body.error && body.error.message) || ("HTTP " + response.status));
    }
    return body;
  }

  function status(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  // Runs one user action; body[data-state] and body[data-revision] say when it is over.
  async function action(work) {
    view.pending += 1;
    document.body.dataset.state = "busy";
    let failed = false;
    try {
      return await work();
    } catch (error) {
      failed = true;
      status(error.message, true);
      return undefined;
    } finally {
      view.pending -= 1;
      view.failed = view.failed || failed;
      view.revision += 1;
      document.body.dataset.revision = String(view.revision);
      if (view.pending === 0) {
        document.body.dataset.state = view.failed ? "error" : "ready";
        view.failed = false;
      }
    }
  }

  // ------------------------------------------------------------------ drawing

  // Adds the nodes and edges not drawn yet; new nodes start around `near` (a node id) when given.
  function addGraph(graph, near) {
    const added = cy.collection();
    const origin = near && cy.getElementById(near).nonempty() ? cy.getElementById(near).position() : { x: 0, y: 0 };
    const fresh = graph.nodes.filter((node) => cy.getElementById(node.id).empty());
    graph.nodes.forEach((node) => {
      const existing = cy.getElementById(node.id);
      if (existing.nonempty() && existing.data("role") === "other" && node.role !== "other") {
        existing.data("role", node.role);
      }
    });
    fresh.forEach((node, i) => {
      const angle = (2 * Math.PI * i) / Math.max(fresh.length, 1);
      const position = { x: origin.x + 80 * Math.cos(angle), y: origin.y + 80 * Math.sin(angle) };
      added.merge(cy.add({ group: "nodes", data: node, position }));
    });
    graph.edges.forEach((edge) => {
      if (cy.getElementById(edge.id).empty()) added.merge(cy.add({ group: "edges", data: edge }));
    });
    return added;
  }

  // Force-directed layout that counts labels as part of each node (fcose), then a pass that moves
  // apart any two nodes whose labelled boxes still overlap, so no label is drawn over another.
  function layout(fresh) {
    if (cy.nodes().length > 1) {
      const options = typeof cytoscapeFcose !== "undefined"
        ? { name: "fcose", quality: "proof", randomize: fresh, animate: false, fit: false,
            nodeDimensionsIncludeLabels: true, idealEdgeLength: 110, nodeRepulsion: 9000,
            nodeSeparation: 110, numIter: 2500, packComponents: false }
        : { name: "cose", randomize: fresh, animate: false, fit: false, nodeDimensionsIncludeLabels: true };
      cy.layout(options).run();
    }
    separateLabels();
  }

  function separateLabels() {
    const items = cy.nodes(":visible").map((node) => {
      const at = node.position();
      const box = node.boundingBox({ includeLabels: true });
      return { node, x: at.x, y: at.y, left: box.x1 - at.x, right: box.x2 - at.x, top: box.y1 - at.y, bottom: box.y2 - at.y };
    });
    for (let sweep = 0; sweep < 500; sweep += 1) {
      let moved = false;
      for (let i = 0; i < items.length; i += 1) {
        for (let j = i + 1; j < items.length; j += 1) {
          const a = items[i], b = items[j];
          const dx = Math.min(a.x + a.right, b.x + b.right) - Math.max(a.x + a.left, b.x + b.left) + LABEL_GAP;
          const dy = Math.min(a.y + a.bottom, b.y + b.bottom) - Math.max(a.y + a.top, b.y + b.top) + LABEL_GAP;
          if (dx <= 0 || dy <= 0) continue;
          moved = true;
          if (dx < dy) {
            const sign = a.x + (a.left + a.right) / 2 <= b.x + (b.left + b.right) / 2 ? -1 : 1;
            a.x += (sign * dx) / 2; b.x -= (sign * dx) / 2;
          } else {
            const sign = a.y + (a.top + a.bottom) / 2 <= b.y + (b.top + b.bottom) / 2 ? -1 : 1;
            a.y += (sign * dy) / 2; b.y -= (sign * dy) / 2;
          }
        }
      }
      if (!moved) break;
    }
    cy.batch(() => items.forEach((item) => item.node.position({ x: item.x, y: item.y })));
  }

  // Fits the graph in view, but never below a readable zoom: then it centres on `focus` and pans.
  function frame(focus) {
    const shown = cy.elements(":visible");
    if (shown.empty()) return;
    cy.fit(shown, 24);
    if (cy.zoom() < READABLE_ZOOM || cy.zoom() > LARGEST_ZOOM) {
      cy.zoom(Math.min(Math.max(cy.zoom(), READABLE_ZOOM), LARGEST_ZOOM));
      const target = focus && focus.nonempty() ? focus : cy.nodes("[role = 'question']:visible");
      cy.center(target.nonempty() ? target : shown);
    }
  }

  function byRoleThenLabel(a, b) {
    return (ROLE_ORDER[a.data("role")] - ROLE_ORDER[b.data("role")]) || a.data("label").localeCompare(b.data("label"));
  }

  function refresh(focus) {
    applyFilter();
    const many = cy.edges(":visible").length > LABELLED_EDGES;
    cy.edges().forEach((edge) => {
      edge.toggleClass("quiet", many && edge.source().id() !== view.selected && edge.target().id() !== view.selected);
    });
    frame(focus);
    renderRelations();
    renderNodeList();
    const hidden = cy.edges(".filtered").length;
    $("graph-summary").textContent = cy.nodes().length + " nodes, " + cy.edges().length + " edges" +
      (hidden ? " (" + hidden + " hidden by the relation filter)" : "");
  }

  // The list twin of the drawing: one button per node, for keyboards, screen readers and tests.
  function renderNodeList() {
    const items = cy.nodes().sort(byRoleThenLabel).map((node) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "node " + node.data("role");
      button.textContent = node.data("label");
      button.dataset.nodeId = node.id();
      button.dataset.role = node.data("role");
      button.setAttribute("aria-pressed", String(node.id() === view.selected));
      if (node.hasClass("filtered")) li.hidden = true;
      button.addEventListener("click", () => openEntity(node.id()));
      li.appendChild(button);
      return li;
    });
    $("node-list").replaceChildren(...items);
  }

  // ------------------------------------------------------------------ relation filter

  function renderRelations() {
    const counts = new Map();
    cy.edges().forEach((edge) => counts.set(edge.data("label"), (counts.get(edge.data("label")) || 0) + 1));
    const names = Array.from(counts.keys()).sort((a, b) => a.localeCompare(b));
    $("relation-filter").hidden = names.length === 0;
    $("relations").replaceChildren(...names.map((name) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = !view.hiddenRelations.has(name);
      box.dataset.relation = name;
      box.addEventListener("change", () => {
        if (box.checked) view.hiddenRelations.delete(name); else view.hiddenRelations.add(name);
        action(async () => {
          applyFilter();
          separateLabels();
          refresh(selectedNode());
          status((box.checked ? "Showing" : "Hiding") + " “" + name + "” edges.");
        });
      });
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = " (" + counts.get(name) + ")";
      label.append(box, " " + name, count);
      return label;
    }));
  }

  // Hides the edges of unchecked relations, and the plain nodes left with none of their edges shown.
  function applyFilter() {
    cy.batch(() => {
      cy.edges().forEach((edge) => { edge.toggleClass("filtered", view.hiddenRelations.has(edge.data("label"))); });
      cy.nodes().forEach((node) => {
        const edges = node.connectedEdges();
        const stranded = edges.nonempty() && edges.every((edge) => edge.hasClass("filtered"));
        node.toggleClass("filtered", stranded && node.data("role") === "other" && node.id() !== view.selected);
      });
    });
  }

  // ------------------------------------------------------------------ answer

  function factItem(fact) {
    const li = document.createElement("li");
    li.dataset.relation = fact[1];
    li.append(fact[0] + " ");
    const rel = document.createElement("span");
    rel.className = "relation";
    rel.textContent = fact[1];
    li.append(rel, " " + fact[2]);
    return li;
  }

  function pathItem(path) {
    const li = document.createElement("li");
    path.forEach((fact, i) => {
      if (i) li.append("; ");
      li.append(...factItem(fact).childNodes);
    });
    return li;
  }

  function showAnswer(answer) {
    const found = answer.found !== false;
    $("result").hidden = false;
    $("result").dataset.found = String(found);
    $("answer-heading").textContent = found ? "Answer" : "No answer in the graph";
    renderAnswerText(answer);
    $("confidence-line").hidden = !found;
    $("confidence-meter").value = answer.confidence;
    $("confidence").textContent = answer.confidence.toFixed(2);
    $("graph-caption").hidden = found;
    const list = $("paths");
    if (found) {
      $("evidence-heading").textContent = "Evidence";
      list.replaceChildren(...(answer.evidence.length ? answer.evidence : answer.facts.map((f) => [f])).map(pathItem));
      [...list.children].forEach((li, i) => { li.id = "evidence-" + (i + 1); li.dataset.evidence = String(i + 1); });
      if (answer.paths_total > answer.evidence.length) {
        const more = document.createElement("li");
        more.textContent = "… " + (answer.paths_total - answer.evidence.length) + " more paths";
        list.appendChild(more);
      }
    } else {
      $("evidence-heading").textContent = "Closest facts (context, not an answer)";
      list.replaceChildren(...answer.facts.map(factItem));
    }
    clearGraph();
    addGraph(answer.graph);
    layout(true);
    refresh(null);
  }

  // The answer's text with each checked claim marked by its status (metadata.claims, the graph's
  // check of what the answer says) and each citation [n] linked to the n-th evidence item.
  function renderAnswerText(answer) {
    const text = answer.answer;
    const claims = (answer.metadata.claims && answer.metadata.claims.claims) || [];
    const parts = [];
    let at = 0;
    for (const claim of claims) {
      const [start, end] = claim.span;
      if (start < at || end > text.length) continue;
      parts.push(...withCitations(text.slice(at, start)));
      const span = document.createElement("span");
      span.className = "claim";
      span.dataset.status = claim.status;
      span.title = claim.status.replace(/_/g, " ") + (claim.reason ? ": " + claim.reason : "");
      span.append(...withCitations(text.slice(start, end)));
      parts.push(span);
      at = end;
    }
    parts.push(...withCitations(text.slice(at)));
    $("answer").replaceChildren(...parts);
  }

  function withCitations(text) {
    const parts = [];
    let at = 0;
    for (const match of text.matchAll(/\[(\d+)\]/g)) {
      parts.push(text.slice(at, match.index));
      const link = document.createElement("a");
      link.className = "citation";
      link.href = "#evidence-" + match[1];
      link.dataset.citation = match[1];
      link.textContent = match[0];
      link.addEventListener("click", (event) => { event.preventDefault(); showCitation(match[1]); });
      parts.push(link);
      at = match.index + match[0].length;
    }
    parts.push(text.slice(at));
    return parts;
  }

  // Marks the cited evidence item and selects its facts in the drawing.
  function showCitation(n) {
    const item = document.getElementById("evidence-" + n);
    [...$("paths").children].forEach((li) => { li.dataset.cited = String(li === item); });
    cy.elements().unselect();
    if (!item) return;
    const facts = [...item.querySelectorAll(".relation")].map((rel) => rel.textContent);
    cy.edges().filter((edge) => facts.includes(edge.data("label")) &&
      item.textContent.includes(edge.source().data("label")) &&
      item.textContent.includes(edge.target().data("label"))).select();
    item.scrollIntoView({ block: "nearest" });
  }

  // POST /ask as server-sent events, read with fetch and a ReadableStream: `token` events grow the
  // answer as it is written (onToken), `answer` is the whole answer, `error` a failure.
  async function streamAnswer(body, onToken) {
    const response = await fetch("/ask", {
      method: "POST", headers: headers(), body: JSON.stringify(Object.assign({ stream: true }, body)),
    });
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      throw new Error((error.error && error.error.message) || ("HTTP " + response.status));
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the answer stream ended without an answer");
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event.name === "token") onToken(event.data.text);
        else if (event.name === "answer") { reader.cancel(); return event.data; }
        else if (event.name === "error") throw new Error(event.data.message);
      }
    }
  }

  function parseEvent(block) {
    let name = "message";
    let data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) name = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    return { name, data: JSON.parse(data) };
  }

  // `options` are more /ask fields, e.g. { answerer: "generate" }.
  function ask(question, options) {
    return action(async () => {
      $("ask").disabled = true;
      status("Thinking…");
      let written = "";
      try {
        const answer = await streamAnswer(Object.assign({ question }, options || {}), (text) => {
          written += text;
          $("result").hidden = false;
          $("answer").dataset.streaming = "true";
          $("answer").textContent = written;
        });
        $("answer").dataset.streaming = "false";
        $("answer").dataset.streamed = String(written.length > 0);
        showAnswer(answer);
        status((answer.found === false ? "No answer in the graph; the closest facts are shown as context. " : "") +
          "Answered in " + (answer.metadata.seconds || 0).toFixed(2) + " s. Choose a node to open it.");
        return answer;
      } finally {
        $("ask").disabled = false;
      }
    });
  }

  // ------------------------------------------------------------------ explorer

  function selectedNode() {
    return view.selected ? cy.getElementById(view.selected) : cy.collection();
  }

  // Opens an entity: draws its neighbourhood next to it and lists its facts in the entity panel.
  function openEntity(id) {
    return action(async () => {
      const node = cy.getElementById(id);
      node.addClass("expanding");
      try {
        const query = new URLSearchParams({ id, limit: String(NEIGHBOURS) });
        const [around, entity] = await Promise.all([call("/neighbors?" + query), call("/entity?" + new URLSearchParams({ id }))]);
        const fresh = cy.nodes().empty();
        const added = addGraph(around.graph, id);
        Object.entries(around.provenance || {}).forEach(([edgeId, known]) => {
          if (!known.asserted) cy.getElementById(edgeId).data("derived", true);
        });
        cy.nodes().removeClass("selected");
        view.selected = id;
        cy.getElementById(id).addClass("selected");
        showEntity(entity, around);
        if (added.nonempty()) layout(fresh);
        refresh(cy.getElementById(id));
        status(entity.label + ": " + added.edges().length + " new facts shown" + (around.more ? " (more exist)" : "") + ".");
        return around;
      } finally {
        node.removeClass("expanding");
      }
    });
  }

  function showEntity(entity, around) {
    $("entity-panel").hidden = false;
    $("entity-panel").dataset.entityId = entity.id;
    $("entity-title").textContent = entity.label;
    const about = [];
    if (entity.type_labels && entity.type_labels.length) about.push(entity.type_labels.join(", "));
    if (entity.aliases.length) about.push("also called " + entity.aliases.join(", "));
    $("entity-about").textContent = about.join(" · ");
    const labels = new Map(around.graph.nodes.map((node) => [node.id, node.label]));
    const provenance = around.provenance || {};
    $("entity-facts").replaceChildren(...around.graph.edges.map((edge) => {
      const li = document.createElement("li");
      li.dataset.relation = edge.label;
      const known = provenance[edge.id];
      const end = (nodeId) => {
        if (nodeId === entity.id) return document.createTextNode(entity.label);
        const link = document.createElement("button");
        link.type = "button";
        link.className = "link";
        link.dataset.entityId = nodeId;
        link.textContent = labels.get(nodeId) || nodeId;
        link.addEventListener("click", () => openEntity(nodeId));
        return link;
      };
      const rel = document.createElement("span");
      rel.className = "relation";
      rel.textContent = edge.label;
      li.append(end(edge.source), " ", rel, " ", end(edge.target));
      if (known) {
        li.dataset.derived = String(!known.asserted);
        li.append(...known.records.map((record) => provenanceLine(record, "")));
      }
      return li;
    }));
    $("entity-more").textContent = around.more ? "The first " + around.facts.length + " facts; the entity has more." : "";
  }

  // ------------------------------------------------------------------ provenance and review

  // One record of where a fact came from: how, from which source, model, score, time (and the text).
  function provenanceLine(record, text) {
    const line = document.createElement("span");
    line.className = "provenance";
    line.dataset.method = record.method;
    const origin = record.method + (record.method === "extracted" ? " from " : " by ") + record.source +
      (record.span ? " (characters " + record.span[0] + "–" + record.span[1] + ")" : "");
    const parts = [origin];
    if (record.model) parts.push("model " + record.model);
    if (record.score !== null && record.score !== undefined) parts.push("score " + record.score.toFixed(2));
    if (record.created) parts.push(record.created.replace("T", " ").replace("+00:00", " UTC"));
    line.textContent = parts.join(" · ");
    if (text) {
      const quote = document.createElement("q");
      quote.textContent = text;
      line.append(" ", quote);
    }
    return line;
  }

  function factName(labels) {
    return labels.join(" ");
  }

  function reviewItem(proposal, writable) {
    const li = document.createElement("li");
    li.dataset.proposalId = proposal.id;
    li.dataset.method = proposal.records[0].method;
    li.dataset.score = String(proposal.score);
    const fact = document.createElement("p");
    fact.className = "fact";
    fact.append(...factItem(proposal.labels).childNodes);
    li.append(fact, ...proposal.records.map((record) => provenanceLine(record, record.text)));
    if (writable) {
      const buttons = document.createElement("div");
      buttons.className = "review-actions";
      [["accept", "Accept"], ["reject", "Reject"]].forEach(([decision, word]) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = decision;
        button.textContent = word;
        button.setAttribute("aria-label", word + ": " + factName(proposal.labels));
        button.addEventListener("click", () => decide(proposal, decision));
        buttons.appendChild(button);
      });
      li.appendChild(buttons);
    }
    return li;
  }

  function reviewSummary(pending, rejected) {
    $("review-summary").textContent = pending + (pending === 1 ? " fact awaits" : " facts await") + " review" +
      (rejected ? "; " + rejected + " rejected so far." : ".");
  }

  function loadReview() {
    return action(async () => {
      const review = await call("/review");
      view.rejected = review.rejected;
      $("review-list").replaceChildren(...review.pending.map((proposal) => reviewItem(proposal, review.writable)));
      if (review.writable) reviewSummary(review.pending.length, review.rejected);
      else $("review-summary").textContent = "This server serves the bundled demo graph, which is read-only: " +
        "serve a graph file of your own (kgllm serve --graph FILE.ttl) to review facts into it.";
      status(review.pending.length + " facts await review.");
      return review;
    });
  }

  // Accepts (writes into the graph) or rejects one fact through the API, then takes it off the list.
  function decide(proposal, decision) {
    return action(async () => {
      await call("/review/" + encodeURIComponent(proposal.id) + "/" + decision, { method: "POST" });
      const item = Array.from($("review-list").children).find((li) => li.dataset.proposalId === proposal.id);
      if (item) item.remove();
      if (decision === "reject") view.rejected += 1;
      reviewSummary($("review-list").children.length, view.rejected);
      status((decision === "accept" ? "Accepted into the graph: " : "Rejected: ") + factName(proposal.labels) + ".");
      const touched = [proposal.triple[0], proposal.triple[2]];
      if (decision === "accept" && touched.includes(view.selected)) openEntity(view.selected); // show it there too
    });
  }

  function search(text) {
    return action(async () => {
      const found = await call("/search?" + new URLSearchParams({ q: text, limit: "10" }));
      const list = $("search-results");
      if (!found.results.length) {
        const li = document.createElement("li");
        li.textContent = "No entity’s name contains “" + text + "”.";
        list.replaceChildren(li);
      } else {
        list.replaceChildren(...found.results.map((entity) => {
          const li = document.createElement("li");
          const button = document.createElement("button");
          button.type = "button";
          button.className = "link";
          button.dataset.entityId = entity.id;
          button.textContent = entity.label;
          button.addEventListener("click", () => openEntity(entity.id));
          li.appendChild(button);
          if (entity.aliases.length) li.append(" (" + entity.aliases.join(", ") + ")");
          return li;
        }));
      }
      status(found.results.length + " entities found for “" + text + "”.");
      return found.results;
    });
  }

  function clearGraph() {
    cy.elements().remove();
    view.selected = null;
    $("entity-panel").hidden = true;
  }

  // ------------------------------------------------------------------ wiring

  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question) return status("Type a question first.", true);
    ask(question);
  });

  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("entity-search").value.trim();
    if (!text) return status("Type part of a name first.", true);
    search(text);
  });

  cy.on("tap", "node", (event) => openEntity(event.target.id()));
  function relayout() {
    return action(async () => {
      layout(true);
      refresh(selectedNode());
    });
  }

  $("fit").addEventListener("click", () => frame(selectedNode()));
  $("relayout").addEventListener("click", () => relayout());
  $("clear").addEventListener("click", () => action(async () => {
    clearGraph();
    $("result").hidden = true;
    refresh(null);
    status("Graph cleared.");
  }));

  $("review-load").addEventListener("click", () => loadReview());

  $("api-key").value = localStorage.getItem("kgllm-api-key") || "";
  // for the console and the browser tests: each action returns a promise and moves data-revision on
  window.kgllm = { cy, ask, search, openEntity, relayout, loadReview };
  document.body.dataset.state = "ready";
})();
