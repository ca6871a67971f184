// The kgllm page: ask, show the answer and its evidence subgraph; a click on a node adds its neighbours.
(function () {
  "use strict";

  const COLORS = { question: "#2563eb", answer: "#16a34a", other: "#94a3b8" };
  const $ = (id) => document.getElementById(id);

  const cy = cytoscape({
    container: $("graph"),
    style: [
      { selector: "node", style: {
          "background-color": (n) => COLORS[n.data("role")] || COLORS.other,
          "label": "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4,
          "width": 22, "height": 22, "color": "#1d2433", "text-wrap": "wrap", "text-max-width": 110 } },
      { selector: "node[role = 'question'], node[role = 'answer']", style: { "width": 30, "height": 30, "font-weight": "bold" } },
      { selector: "edge", style: {
          "curve-style": "bezier", "target-arrow-shape": "triangle", "width": 1.5,
          "line-color": "#9aa5b8", "target-arrow-color": "#9aa5b8",
          "label": "data(label)", "font-size": 9, "color": "#0e7490", "text-rotation": "autorotate",
          "text-background-color": "#fbfcfe", "text-background-opacity": 1 } },
      { selector: "node.expanding", style: { "border-width": 3, "border-color": "#f59e0b" } },
    ],
  });
  window.kgllm = { cy };  // for the browser test and the console

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

  function addGraph(graph) {
    const added = cy.collection();
    graph.nodes.forEach((node) => {
      const existing = cy.getElementById(node.id);
      if (existing.nonempty()) {
        if (existing.data("role") === "other" && node.role !== "other") existing.data("role", node.role);
      } else {
        added.merge(cy.add({ group: "nodes", data: node }));
      }
    });
    graph.edges.forEach((edge) => {
      if (cy.getElementById(edge.id).empty()) added.merge(cy.add({ group: "edges", data: edge }));
    });
    return added;
  }

  function layout() {
    const roots = cy.nodes("[role = 'question']");
    const options = roots.nonempty()
      ? { name: "breadthfirst", roots: roots, directed: false, spacingFactor: 1.1, padding: 20, animate: false }
      : { name: "cose", padding: 20, animate: false };
    cy.layout(options).run();
    $("graph-summary").textContent = cy.nodes().length + " nodes, " + cy.edges().length + " edges";
  }

  function pathLine(path) {
    const li = document.createElement("li");
    path.forEach((fact, i) => {
      if (i) li.appendChild(document.createTextNode("; "));
      li.appendChild(document.createTextNode(fact[0] + " "));
      const rel = document.createElement("span");
      rel.className = "relation";
      rel.textContent = fact[1];
      li.appendChild(rel);
      li.appendChild(document.createTextNode(" " + fact[2]));
    });
    return li;
  }

  function showAnswer(answer) {
    $("result").hidden = false;
    $("answer").textContent = answer.answer;
    $("confidence-meter").value = answer.confidence;
    $("confidence").textContent = answer.confidence.toFixed(2);
    const list = $("paths");
    list.replaceChildren(...(answer.evidence.length ? answer.evidence : answer.facts.map((f) => [f])).map(pathLine));
    if (answer.paths_total > answer.evidence.length) {
      const more = document.createElement("li");
      more.textContent = "… " + (answer.paths_total - answer.evidence.length) + " more paths";
      list.appendChild(more);
    }
    cy.elements().remove();
    addGraph(answer.graph);
    layout();
  }

  $("ask-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question) return status("Type a question first.", true);
    $("ask").disabled = true;
    status("Thinking…");
    try {
      const answer = await call("/ask", { method: "POST", body: JSON.stringify({ question }) });
      showAnswer(answer);
      status("Answered in " + (answer.metadata.seconds || 0).toFixed(2) + " s. Click a node to expand it.");
    } catch (error) {
      status(error.message, true);
    } finally {
      $("ask").disabled = false;
    }
  });

  cy.on("tap", "node", async (event) => {
    const node = event.target;
    node.addClass("expanding");
    try {
      const result = await call("/neighbors?" + new URLSearchParams({ id: node.id(), limit: "40" }));
      const added = addGraph(result.graph);
      layout();
      status(node.data("label") + ": " + added.edges().length + " new facts shown" + (result.more ? " (more exist)" : "") + ".");
    } catch (error) {
      status(error.message, true);
    } finally {
      node.removeClass("expanding");
    }
  });

  $("api-key").value = localStorage.getItem("kgllm-api-key") || "";
})();
